"""Type stub of biqabench.plugin_api: the names its lazy table serves, for IDEs and type checkers.

Generated from the table (tests/system/test_code_rules.py::plugin_api_stub); a test keeps them equal.
"""

from __future__ import annotations

from biqabench.base.config import load_yaml as load_yaml
from biqabench.base.config import override as override
from biqabench.base.errors import BiqaError as BiqaError
import biqabench.base.io as io
from biqabench.base.paths import results_root as results_root
from biqabench.base.plots import loss_curve as loss_curve
from biqabench.components.backbones import Backbone as Backbone
from biqabench.components.backbones import TinyBackbone as TinyBackbone
from biqabench.components.backbones import create_backbone as create_backbone
from biqabench.components.heads import HeadSpec as HeadSpec
from biqabench.components.heads import IQAHead as IQAHead
from biqabench.components.heads import PyiqaCheckpoint as PyiqaCheckpoint
from biqabench.components.heads import TrainRecipe as TrainRecipe
from biqabench.components.heads import load_foreign_state_dict as load_foreign_state_dict
from biqabench.components.heads import presets_in as presets_in
from biqabench.components.hookspecs import hookimpl as hookimpl
from biqabench.components.optimizers import build_optimizer as build_optimizer
from biqabench.components.optimizers import check_optimizer as check_optimizer
from biqabench.components.plugins import registry as registry
from biqabench.components.pretrain import PretrainRequest as PretrainRequest
from biqabench.components.pretrain import PretrainerSpec as PretrainerSpec
from biqabench.components.weights import PREFIXES as WEIGHTS_PREFIXES
from biqabench.components.weights import WeightsRecord as WeightsRecord
from biqabench.components.weights import WeightsStore as WeightsStore
from biqabench.components.weights import read_state_dict as read_state_dict
from biqabench.data.embedded import VERSION as EMBEDDED_VERSION
from biqabench.data.embedded import embedded_root as embedded_root
from biqabench.data.embedded import load_photo as load_photo
from biqabench.data.embedded import pristine_dir as pristine_dir
from biqabench.data.embedded import publish as publish
from biqabench.data.images import IMAGENET_MEAN as IMAGENET_MEAN
from biqabench.data.images import IMAGENET_STD as IMAGENET_STD
from biqabench.data.images import decode_array as decode_array
from biqabench.data.readers import load_generic as load_generic
from biqabench.data.readers import load_pyiqa as load_pyiqa
from biqabench.data.readers.common import cell as cell
from biqabench.data.readers.common import column as column
from biqabench.data.readers.common import find_dir as find_dir
from biqabench.data.readers.common import find_file as find_file
from biqabench.data.readers.common import has_files as has_files
from biqabench.data.readers.common import need_root as need_root
from biqabench.data.readers.common import no_unknown_options as no_unknown_options
from biqabench.data.readers.common import parse_bool as parse_bool
from biqabench.data.readers.common import read_csv as read_csv
from biqabench.data.readers.common import read_whitespace_table as read_whitespace_table
from biqabench.data.readers.common import split_label as split_label
from biqabench.data.readers.tables import read_generic_csv as read_generic_csv
from biqabench.data.readers.xlsx import read_xlsx as read_xlsx
from biqabench.data.table import DatasetSpec as DatasetSpec
from biqabench.data.table import IQATable as IQATable
from biqabench.data.table import build_table as build_table
from biqabench.runtime.device import Runtime as Runtime
from biqabench.runtime.device import choose_threads as choose_threads
from biqabench.runtime.device import get_runtime as get_runtime
from biqabench.runtime.device import threads as threads
import biqabench.runtime.distributed as distributed
from biqabench.runtime.interrupt import Interrupted as Interrupted
from biqabench.runtime.interrupt import StopFlag as StopFlag
import biqabench.training.checkpoint as checkpoint
from biqabench.training.contrastive import Encoder as Encoder
from biqabench.training.contrastive import KeyQueue as KeyQueue
from biqabench.training.contrastive import Projector as Projector
from biqabench.training.contrastive import concat_all_gather as concat_all_gather
from biqabench.training.contrastive import info_nce_logits as info_nce_logits
from biqabench.training.contrastive import momentum_update as momentum_update
from biqabench.training.contrastive import nt_xent as nt_xent
from biqabench.training.contrastive import shuffled_forward as shuffled_forward
from biqabench.training.divergence import NanGuard as NanGuard
from biqabench.training.divergence import check_policy as check_policy
from biqabench.training.pretrain_data import CropDataset as CropDataset
from biqabench.training.pretrain_data import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from biqabench.training.pretrain_data import StepBatches as StepBatches
from biqabench.training.pretrain_data import StepSampler as StepSampler
from biqabench.training.pretrain_data import StreamSampler as StreamSampler
from biqabench.training.pretrain_data import Views as Views
from biqabench.training.pretrain_data import default_data as default_data
from biqabench.training.pretrain_data import image_at as image_at
from biqabench.training.pretrain_data import list_images as list_images
from biqabench.training.pretrain_data import low_priority_worker as low_priority_worker
from biqabench.training.pretrain_data import normalise as normalise
from biqabench.training.pretrain_data import random_patches as random_patches
from biqabench.training.pretrain_data import step_generators as step_generators
from biqabench.training.pretrain_data import step_samples as step_samples
from biqabench.training.pretrain_method import FROM_REQUEST as FROM_REQUEST
from biqabench.training.pretrain_method import OptimConfig as OptimConfig
from biqabench.training.pretrain_method import RESUMABLE_CHANGES as PRETRAIN_RESUMABLE_CHANGES
from biqabench.training.pretrain_method import PretrainConfig as PretrainConfig
from biqabench.training.pretrain_method import Pretrainer as Pretrainer
from biqabench.training.pretrain_method import fit_crop as fit_crop
from biqabench.training.pretrain_method import load_config as load_pretrain_config
from biqabench.training.pretrain_method import lr_at as lr_at
from biqabench.training.pretrain_method import request_values as request_values
from biqabench.training.pretraining import CHECKPOINT as PRETRAIN_CHECKPOINT
from biqabench.training.pretraining import PretrainTrainer as PretrainTrainer
from biqabench.training.pretraining import run_pretraining as run_pretraining

__all__ = ['Backbone', 'BiqaError', 'CropDataset', 'DatasetSpec', 'EMBEDDED_VERSION', 'Encoder', 'FROM_REQUEST', 'HeadSpec', 'IMAGENET_MEAN', 'IMAGENET_STD', 'IMAGE_SUFFIXES', 'IQAHead', 'IQATable', 'Interrupted', 'KeyQueue', 'NanGuard', 'OptimConfig', 'PRETRAIN_CHECKPOINT', 'PRETRAIN_RESUMABLE_CHANGES', 'PretrainConfig', 'PretrainRequest', 'PretrainTrainer', 'Pretrainer', 'PretrainerSpec', 'Projector', 'PyiqaCheckpoint', 'Runtime', 'StepBatches', 'StepSampler', 'StopFlag', 'StreamSampler', 'TinyBackbone', 'TrainRecipe', 'Views', 'WEIGHTS_PREFIXES', 'WeightsRecord', 'WeightsStore', 'build_optimizer', 'build_table', 'cell', 'check_optimizer', 'check_policy', 'checkpoint', 'choose_threads', 'column', 'concat_all_gather', 'create_backbone', 'decode_array', 'default_data', 'distributed', 'embedded_root', 'find_dir', 'find_file', 'fit_crop', 'get_runtime', 'has_files', 'hookimpl', 'image_at', 'info_nce_logits', 'io', 'list_images', 'load_foreign_state_dict', 'load_generic', 'load_photo', 'load_pretrain_config', 'load_pyiqa', 'load_yaml', 'loss_curve', 'low_priority_worker', 'lr_at', 'momentum_update', 'need_root', 'no_unknown_options', 'normalise', 'nt_xent', 'override', 'parse_bool', 'presets_in', 'pristine_dir', 'publish', 'random_patches', 'read_csv', 'read_generic_csv', 'read_state_dict', 'read_whitespace_table', 'read_xlsx', 'registry', 'request_values', 'results_root', 'run_pretraining', 'shuffled_forward', 'split_label', 'step_generators', 'step_samples', 'threads']

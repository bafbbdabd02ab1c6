"""Bundled plugin: the IQA datasets biqabench knows (official distributions, pyiqa meta CSVs,
custom CSVs, the embedded demo sets), as ``DatasetSpec`` entries.

The readers of the official distributions ship here (:mod:`.authentic`, :mod:`.synthetic`), and
so does the builder of the embedded demo sets (:mod:`.demo`), on the core's generic helpers
(``biqabench.data.readers``: file finding, CSV/xlsx parsing, the ``csv``/``pyiqa`` table readers;
``biqabench.data.embedded``: the bundled photos and their cache).  Registered exactly as a
third-party dataset plugin would be: one ``DatasetSpec`` per dataset, so the core holds the
protocol and the generic machinery, never the list.
"""

from __future__ import annotations

from functools import partial

from biqabench.plugin_api import DatasetSpec, has_files as _has, hookimpl, load_generic, load_pyiqa
from biqabench_plugins.datasets import demo
from biqabench_plugins.datasets.authentic import (KONIQ_LABELS, SPAQ_LABELS, load_bid, load_clive, load_flive,
                                                  load_koniq, load_spaq)
from biqabench_plugins.datasets.synthetic import CSIQ_LABELS, load_csiq, load_kadid, load_live, load_tid2013


@hookimpl
def register_datasets(register):
    for spec in dataset_specs():
        register(spec)


def dataset_specs() -> list[DatasetSpec]:
    """One entry per bundled dataset (a data table, not logic)."""
    demo_layout = ("built offline on first use under <cache>/embedded/<version>/NAME: images/*.png, "
                   "labels.csv (image,mos,ref,distortion,level)")
    return [
        DatasetSpec(
            "clive", load_clive, "LIVE In the Wild Image Quality Challenge (1,162 photos; 7 training images dropped)",
            layout="ChallengeDB_release/{Data/AllImages_release.mat, Data/AllMOS_release.mat, "
                   "Images/*.JPG|bmp, Images/trainingImages/t1..t7.bmp}",
            scale=(0.0, 100.0), folders=("ChallengeDB_release", "clive", "LIVEC", "livec", "clive-dev"),
            detect=_has("AllImages_release.mat"), options_help="drop_training=true|false"),
        DatasetSpec(
            "koniq10k", load_koniq, "KonIQ-10k (10,073 photos, official train/val/test sets)",
            layout="koniq10k/{koniq10k_distributions_sets.csv | koniq10k_scores_and_distributions.csv, "
                   "1024x768/*.jpg | 512x384/*.jpg}",
            scale=(0.0, 100.0), folders=("koniq10k", "koniq", "KonIQ-10k"), detect=_has(*KONIQ_LABELS),
            options_help="images=1024x768|512x384|DIR, csv=FILE"),
        DatasetSpec(
            "spaq", load_spaq, "SPAQ smartphone photos (11,125; ~4000x3000, resized to 512 short side by default)",
            layout="SPAQ/{Annotations/MOS and Image attribute scores.xlsx, TestImage/*.jpg}",
            scale=(0.0, 100.0), folders=("SPAQ", "spaq"), detect=_has(*SPAQ_LABELS), default_resize=512),
        DatasetSpec(
            "bid", load_bid, "BID blur image database (586 photos, MOS 0..5)",
            layout="BID/{DatabaseGrades.xlsx, [ImageDatabase/]DatabaseImage0001.JPG...}",
            scale=(0.0, 5.0), folders=("BID", "bid"), detect=_has("DatabaseGrades.xlsx", "DatabaseGrades.csv")),
        DatasetSpec(
            "flive", load_flive, "FLIVE / PaQ-2-PiQ (39,810 images, official split)",
            layout="FLIVE_Database/database/{labels_image.csv, labels>640.csv, labels<=640_padded.csv, <images>}",
            scale=(0.0, 100.0), folders=("FLIVE_Database", "FLIVE", "flive"), detect=_has("labels_image.csv")),
        DatasetSpec(
            "kadid10k", load_kadid, "KADID-10k (81 references x 25 distortions x 5 levels; MOS 1..5)",
            layout="kadid10k/{dmos.csv, images/I01_01_01.png...}", scale=(1.0, 5.0), synthetic=True,
            folders=("kadid10k", "KADID-10k", "kadid"), detect=_has("dmos.csv")),
        DatasetSpec(
            "tid2013", load_tid2013, "TID2013 (25 references, 3,000 distorted images; MOS 0..9)",
            layout="tid2013/{mos_with_names.txt, distorted_images/i01_01_1.bmp..., reference_images/}",
            scale=(0.0, 9.0), synthetic=True, folders=("tid2013", "TID2013"), detect=_has("mos_with_names.txt")),
        DatasetSpec(
            "live", load_live, "LIVE IQA release 2 (29 references, 779 distorted images; DMOS, lower is better)",
            layout="databaserelease2/{dmos_realigned.mat (default; dmos.mat with realigned=false), refnames_all.mat, "
                   "jp2k/ jpeg/ wn/ gblur/ fastfading/ img*.bmp, refimgs/}",
            scale=(0.0, 100.0), higher_better=False, synthetic=True,
            folders=("LIVEIQA_release2", "databaserelease2", "live", "LIVE"), detect=_has("dmos.mat"),
            options_help="realigned=true|false"),
        DatasetSpec(
            "csiq", load_csiq, "CSIQ (30 references, 866 distorted images; DMOS 0..1, lower is better)",
            layout="CSIQ/{csiq_label.txt (name DMOS lines), dst_imgs/<distortion>/*.png | dst_imgs_all/*.png}",
            scale=(0.0, 1.0), higher_better=False, synthetic=True, folders=("CSIQ", "csiq"),
            detect=_has(*CSIQ_LABELS)),
        DatasetSpec(
            "pyiqa", load_pyiqa, "any dataset prepared for pyiqa: a meta_info_*.csv (-o meta=FILE) + its image folder",
            layout="ROOT/<images as named in the meta CSV>; meta_info_<Name>Dataset.csv: img_name,mos[,std][,split] "
                   "or ref_name,dist_name,mos|dmos[,std]",
            options_help="meta=FILE, scale=LO,HI, higher_better=true|false, name=NAME, drop_training=true|false"),
        DatasetSpec(
            "csv", load_generic, "custom data: a CSV image,mos[,ref][,split] with an explicit score scale",
            layout="ROOT/{labels.csv (image,mos[,ref][,split]), images at the paths it names}",
            options_help="csv=FILE, scale=LO,HI (required), higher_better=true|false, name=NAME, image_dir=DIR"),
        DatasetSpec(
            "demo-a", partial(demo.load_demo, "demo-a"), "embedded demo set A: " + demo.DESCRIPTION,
            layout=demo_layout, scale=(0.0, 100.0), synthetic=True, needs_root=False),
        DatasetSpec(
            "demo-b", partial(demo.load_demo, "demo-b"), "embedded demo set B (contents disjoint from A): "
            + demo.DESCRIPTION, layout=demo_layout, scale=(0.0, 100.0), synthetic=True, needs_root=False),
    ]

from biqabench.cli import main

main()

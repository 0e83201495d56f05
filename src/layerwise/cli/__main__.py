from layerwise.cli.app import main

main()

from trackvision.cli import main

main()

from tritonlite.cli import main

main()

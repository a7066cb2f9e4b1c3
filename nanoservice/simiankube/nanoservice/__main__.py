"""`python -m simiankube.nanoservice`: one instance, configured from the environment."""

from simiankube.nanoservice.launch import main

main()

module github.com/simiankube/simiankube/rig/pause

go 1.22

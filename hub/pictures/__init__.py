"""Small PNGs of jobs' results and datasets' images, uploaded by the sites' agents."""

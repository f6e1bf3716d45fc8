"""How long a job will run at a site: priors from published benchmarks and measured runs,
learned per site and job kind from every finished run."""

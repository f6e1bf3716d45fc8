#!/bin/sh
# RELION "Standard submission script" for the cryomesh network.
#
# RELION fills this in (XXX...XXX replaced by the job's values), saves it as
# <job dir>/run_submit.script and runs `cryomesh relion submit <that file> &` from the
# project directory. No shell runs it: `cryomesh relion submit` reads the "#cryomesh"
# lines and the RELION command lines, sends the files the commands read to the site
# that runs them, and brings the job's directory home. Set-up: docs/researcher-guide.md.
#
#cryomesh queue XXXqueueXXX
#cryomesh mpi_ranks XXXmpinodesXXX
#cryomesh threads XXXthreadsXXX
#cryomesh output_dir XXXnameXXX
#cryomesh gpu_model XXXextra1XXX
#cryomesh gpus XXXextra2XXX
#cryomesh walltime_h XXXextra3XXX
#cryomesh memory_gb XXXextra4XXX
#cryomesh max_cost XXXextra5XXX
#cryomesh deadline XXXextra6XXX
XXXcommandXXX

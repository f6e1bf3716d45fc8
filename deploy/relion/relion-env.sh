# Source this before starting RELION (`. deploy/relion/relion-env.sh; relion &`) so that
# "Submit to queue?" sends jobs into the cryomesh network. Names as RELION 3.1 reads them
# (src/pipeline_jobs.cpp); the GUI shows EXTRAn as extra fields on the Running tab.
CRYOMESH_DEPLOY="${CRYOMESH_DEPLOY:-/opt/cryomesh/deploy}"

export RELION_QUEUE_USE=yes
export RELION_QUEUE_NAME=auto            # a site's name, or auto: the broker chooses
export RELION_QSUB_COMMAND="cryomesh relion submit"
export RELION_QSUB_TEMPLATE="$CRYOMESH_DEPLOY/relion/cryomesh_submit.sh"
export RELION_QSUB_EXTRA_COUNT=6
export RELION_QSUB_EXTRA1="Network GPU model"
export RELION_QSUB_EXTRA1_DEFAULT=""
export RELION_QSUB_EXTRA1_HELP="GPU model the job needs, e.g. a100 (blank: any site, CPU or GPU). Sets resources.gpu_model."
export RELION_QSUB_EXTRA2="Network GPUs"
export RELION_QSUB_EXTRA2_DEFAULT=""
export RELION_QSUB_EXTRA2_HELP="Number of GPUs (blank: 0, or 1 when a GPU model is given)."
export RELION_QSUB_EXTRA3="Walltime (hours)"
export RELION_QSUB_EXTRA3_DEFAULT="1"
export RELION_QSUB_EXTRA3_HELP="Longest the job may run; sites refuse jobs longer than they lend."
export RELION_QSUB_EXTRA4="Memory (GB)"
export RELION_QSUB_EXTRA4_DEFAULT="4"
export RELION_QSUB_EXTRA4_HELP="Memory for the whole job at the site."
export RELION_QSUB_EXTRA5="Max cost"
export RELION_QSUB_EXTRA5_DEFAULT=""
export RELION_QSUB_EXTRA5_HELP="Run only where the estimated cost stays within this, in the network's currency (blank: no cap). Sets max_cost."
export RELION_QSUB_EXTRA6="Deadline"
export RELION_QSUB_EXTRA6_DEFAULT=""
export RELION_QSUB_EXTRA6_HELP="Run only where the job should finish by then: +hours (e.g. +12) or a time with its zone, e.g. 2027-01-31T18:00+09:00 (blank: none). Sets deadline."

# Where the home site publishes project files for other sites (its [relion] exchange,
# a directory the partner sites mount), and who you are in the network.
export CRYOMESH_RELION_EXCHANGE="${CRYOMESH_RELION_EXCHANGE:-/srv/cryomesh/exchange}"
# export CRYOMESH_HUB_URL=https://hub.example.org   # and `cryomesh login`, or CRYOMESH_CLIENT_ID/SECRET

#!/bin/sh
# One night of batchsubmit, as the tool intends it (the crontab line and the systemd unit run this):
#   1. status --follow --collect: follow last night's jobs until final (at most 1 h); their
#      final states are recorded in <results>.follow.jsonl, and each hosting result (a
#      manifest with [job.body.output.hosting]) is saved under $COLLECT before VAS lets it
#      expire (48 h): prune keeps a job until its result is saved
#   2. prune: delete what is final, recorded (hosting results collected) and final for 20 h
#      (a night: the timer's start moves by up to 10 minutes, and a job final 23 h 55 min ago
#      would wait another night at 24 h)
#   3. submit --make-room: if tonight's videos do not fit under the 5,000 saved-jobs quota, prune
#      more (oldest first, only as many as needed), then submit what fits; the rest is deferred
#      to the next night (exit 0, "deferred" and the reason in the summary and the metrics)
# Exit code: the worst of the three steps', by severity rather than number: any error (2, 3, a
# signal's 130/143, 127 for a missing binary) over some jobs or deletes failed (1) over another
# run holding the results file (75) over all well (0); so cron mails, and systemd flags, one
# night once, and a step skipped for the lock never hides a failure. status's 4 (some of last
# night's jobs still running) is not a failure of the night.
# Metrics: one file, the submit step's (with make-room's saved jobs, pruned and deferred).
# -q everywhere: nothing is printed when all went well, everything when something did not.
set -u
BATCHSUBMIT=${BATCHSUBMIT:-/opt/batchsubmit/bin/batchsubmit}
MANIFEST=${MANIFEST:-/srv/videos/nightly.toml}
RESULTS=${RESULTS:-/srv/videos/nightly.results.csv}
REPORTS=${REPORTS:-/var/log/batchsubmit}
METRICS=${METRICS:-/var/lib/node_exporter/textfile/batchsubmit.prom}
QUOTA=${QUOTA:-5000}
COLLECT=${COLLECT:-$REPORTS/hosting-results}

severity() {  # severity CODE: 0 all well, 1 locked out, 2 some failed, 3 an error
    case $1 in
        0) echo 0 ;;
        75) echo 1 ;;
        1) echo 2 ;;
        *) echo 3 ;;
    esac
}

worst=0
step() {  # step NAME COMMAND...
    name=$1
    shift
    "$@"
    code=$?
    # status 4: some of last night's jobs are still running; they are followed again tomorrow
    if [ "$name" = follow ] && [ "$code" -eq 4 ]; then code=0; fi
    if [ "$(severity "$code")" -gt "$(severity "$worst")" ]; then worst=$code; fi
}

if [ -f "$RESULTS" ]; then  # the first night has nothing to follow
    step follow "$BATCHSUBMIT" status "$RESULTS" --follow --deadline 1h --collect "$COLLECT" -q
fi
step prune "$BATCHSUBMIT" prune "$RESULTS" --older-than 20h -q --summary "$REPORTS/prune.json"
step submit "$BATCHSUBMIT" submit "$MANIFEST" --results "$RESULTS" --make-room --quota "$QUOTA" -q \
    --deadline 4h --max-failures 200 --summary "$REPORTS/last.json" --metrics "$METRICS"
exit "$worst"

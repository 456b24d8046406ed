#!/bin/sh
# A fake submission that never ends: it starts a child and a double-forked daemon (a sleep in a
# session of its own, orphaned at once), writes "<own pid> <child pid> <daemon pid>" to the file
# $FAKE_PIDS and waits for ever. Plain sh, so it is running within milliseconds even on a loaded machine.
sleep 600 &
child=$!
(setsid sleep 600 & echo $! > "$FAKE_PIDS.daemon")
while [ ! -s "$FAKE_PIDS.daemon" ]; do sleep 0.01; done
echo "$$ $child $(cat "$FAKE_PIDS.daemon")" > "$FAKE_PIDS.tmp" && mv "$FAKE_PIDS.tmp" "$FAKE_PIDS"
wait

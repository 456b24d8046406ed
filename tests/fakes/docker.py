"""A fake `docker` client: records its arguments and runs tests/fakes/submission.py on the mounts.

    docker container run ... -v HOST/:/workspace/inputs/:ro -v HOST/:/workspace/outputs/ IMAGE ...
    docker inspect -f {{.State.Pid}} NAME     prints 0 (no container process to attach to)
    docker kill NAME
"""
import json
import os
import subprocess
import sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:2] == ["container", "run"]:
    mounts = {}
    for i, arg in enumerate(args):
        if arg == "-v":
            host, container = args[i + 1].split(":")[:2]
            mounts[container.rstrip("/")] = host
    submission = Path(__file__).with_name("submission.py")
    sys.exit(subprocess.call([sys.executable, str(submission), mounts["/workspace/inputs"], mounts["/workspace/outputs"]]))
if args[:1] == ["inspect"]:
    print(0)

"""Starts a throwaway Apache Superset for tests: writes a config with a SQLite metadata database
in WORK_DIR, migrates it, creates the admin user and the default roles and permissions, then
replaces itself with the web server on 127.0.0.1:PORT in the foreground, so a harness can run it
as a child process, poll GET /health and kill it. Run it with the Python that has Superset
installed; the `superset` command is looked up next to that interpreter, then on PATH.

The setup commands (`superset db upgrade`, `superset fab create-admin`, `superset init`) run in
this one process against one app instance, which saves loading Superset three times; their
output goes to WORK_DIR/setup.log. Once setup has succeeded, later runs with the same WORK_DIR
skip it. With --template DIR, the set-up metadata database is also saved in DIR and copied from
there by later runs, so a fresh WORK_DIR costs a file copy instead of the setup; a template made
by another Superset version is ignored and replaced. The admin user in a template is the one of
the run that made it.

usage: superset_serve.py WORK_DIR PORT [--template DIR] [--username admin] [--password admin]
"""

import argparse
import importlib.metadata
import os
import shutil
import sys
import time

DATABASE_FILE = "superset.db"
DONE_MARKER = "setup-done"

CONFIG = """\
import logging

SECRET_KEY = {secret!r}
SQLALCHEMY_DATABASE_URI = {database!r}
LOG_LEVEL = logging.WARNING
# No request log lines; errors are still logged by Superset.
logging.getLogger("werkzeug").setLevel(logging.WARNING)
"""


def superset_command():
    beside = os.path.join(os.path.dirname(sys.executable), "superset")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("superset")
    if not found:
        sys.exit("superset_serve: no `superset` command next to this Python or on PATH")
    return found


def setup(log_path, username, password):
    """Runs the setup commands with stdout and stderr sent to log_path."""
    steps = [
        ["db", "upgrade"],
        ["fab", "create-admin", "--username", username, "--firstname", "Admin",
         "--lastname", "User", "--email", "admin@example.com", "--password", password],
        ["init"],
    ]
    saved = os.dup(1), os.dup(2)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    timings = []
    failure = None
    try:
        started = time.monotonic()
        from flask.cli import ScriptInfo
        from superset.app import create_app
        from superset.cli.main import superset

        app = create_app()
        timings.append(("load", time.monotonic() - started))
        for command in steps:
            started = time.monotonic()
            superset.main(
                args=command, obj=ScriptInfo(create_app=lambda: app), standalone_mode=False
            )
            timings.append((" ".join(command[:2]), time.monotonic() - started))
    except BaseException as error:  # the commands may raise SystemExit
        failure = error
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(log)
    summary = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in timings)
    if failure is not None:
        with open(log_path, errors="replace") as written:
            tail = written.read()[-4000:]
        sys.exit(f"superset_serve: setup failed ({failure!r}) after {summary}:\n{tail}")
    print(f"superset_serve: setup done: {summary}", file=sys.stderr, flush=True)


def is_ready(directory, version):
    """Whether directory holds a metadata database set up by this Superset version."""
    try:
        with open(os.path.join(directory, DONE_MARKER)) as marker:
            done = marker.read().strip() == version
    except OSError:
        return False
    return done and os.path.exists(os.path.join(directory, DATABASE_FILE))


def mark_ready(directory, version):
    with open(os.path.join(directory, DONE_MARKER), "w") as marker:
        marker.write(version + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir")
    parser.add_argument("port", type=int)
    parser.add_argument("--template", help="directory keeping a set-up metadata database")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    args = parser.parse_args()

    work_dir = os.path.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    config_path = os.path.join(work_dir, "superset_config.py")
    database_path = os.path.join(work_dir, DATABASE_FILE)
    with open(config_path, "w") as config:
        config.write(
            CONFIG.format(
                secret="superset-test-secret-key-0123456789abcdef",
                database=f"sqlite:///{database_path}",
            )
        )
    os.environ.update(
        SUPERSET_CONFIG_PATH=config_path, SUPERSET_HOME=work_dir, PYTHONUNBUFFERED="1"
    )
    os.chdir(work_dir)
    superset = superset_command()

    version = importlib.metadata.version("apache-superset")
    template = os.path.abspath(args.template) if args.template else None
    if not is_ready(work_dir, version):
        if template and is_ready(template, version):
            shutil.copyfile(os.path.join(template, DATABASE_FILE), database_path)
            print(f"superset_serve: metadata database copied from {template}", file=sys.stderr,
                  flush=True)
        else:
            if os.path.exists(database_path):
                os.remove(database_path)
            setup(os.path.join(work_dir, "setup.log"), args.username, args.password)
        mark_ready(work_dir, version)
        if template and not is_ready(template, version):
            os.makedirs(template, exist_ok=True)
            partial = os.path.join(template, f"{DATABASE_FILE}.{os.getpid()}")
            shutil.copyfile(database_path, partial)
            os.replace(partial, os.path.join(template, DATABASE_FILE))
            mark_ready(template, version)

    print(f"superset_serve: starting web server on 127.0.0.1:{args.port}", file=sys.stderr,
          flush=True)
    os.execv(
        superset,
        [superset, "run", "--host", "127.0.0.1", "--port", str(args.port), "--with-threads"],
    )


if __name__ == "__main__":
    main()

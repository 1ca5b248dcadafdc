"""
nova's own code doing nova's part for the tests: run in nova's environment
(tests/nova/.venv, made by `make test` from tests/nova/requirements.txt),
never imported by txvnc or its tests (importing nova pulls in eventlet).

    tests/nova/.venv/bin/python tests/nova/mint.py NOVA_CONF

reads nova.conf like any nova service (its [database] connection), then
answers one command a line on standard input with one line on standard
output, "ok " and JSON, or "error " and the reason:

    migrate                        create the cell database (nova's migrations)
    instance                       create an instance, its uuid
    token INSTANCE HOST PORT TTL [BASE]
                                   authorize a novnc console (access URL base
                                   BASE, else [vnc] novncproxy_base_url): the
                                   token and nova's access URL
    clean INSTANCE                 clean_console_auths_for_instance
    delete INSTANCE                destroy the instance (soft delete)
"""

import json
import sys
import traceback
import uuid


def main(conf):
    from nova import config, objects
    from nova import context as nova_context
    from nova.db import migration
    from nova.db.main import api as db

    objects.register_all()
    config.parse_args(["mint"], default_config_files=[conf], init_rpc=False)
    ctxt = nova_context.get_admin_context()
    from nova.conf import CONF

    def migrate():
        migration.db_sync(database="main")
        return "migrated"

    def instance():
        made = str(uuid.uuid4())
        db.instance_create(
            ctxt,
            {"uuid": made, "project_id": "txvnc-tests", "user_id": "txvnc-tests"},
        )
        return made

    def token(instance_uuid, host, port, ttl, base=None):
        auth = objects.ConsoleAuthToken(
            context=ctxt,
            console_type="novnc",
            host=host,
            port=int(port),
            internal_access_path=None,
            instance_uuid=instance_uuid,
            access_url_base=base or CONF.vnc.novncproxy_base_url,
        )
        secret = auth.authorize(int(ttl))
        return {"token": secret, "access_url": auth.access_url}

    def clean(instance_uuid):
        objects.ConsoleAuthToken.clean_console_auths_for_instance(ctxt, instance_uuid)
        return "cleaned"

    def delete(instance_uuid):
        db.instance_destroy(ctxt, instance_uuid)
        return "deleted"

    commands = {
        "migrate": migrate,
        "instance": instance,
        "token": token,
        "clean": clean,
        "delete": delete,
    }
    print("ok \"ready\"", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            answer = "ok " + json.dumps(commands[words[0]](*words[1:]))
        except Exception as e:
            traceback.print_exc()
            answer = "error " + json.dumps(f"{type(e).__name__}: {e}")
        print(answer, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

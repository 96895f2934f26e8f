"""Run the real operator (our kopf handlers) in its own process, so a chaos test can SIGKILL it.

`python operator_main.py '<OperatorSettings as JSON>'`; KUBECONFIG names the API server (the fault
proxy). Same startup as `mnv2 operator` and the e2e harness's OperatorRunner (settings, then
`kopf.operator`), but short test timeouts can be passed and nothing listens on a port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys


def main(argv: list[str]) -> int:
    import kopf
    from mnv2_operator import handlers  # noqa: F401  (registers the handlers)
    from mnv2_operator import settings as operator_settings

    settings = operator_settings.OperatorSettings(**json.loads(argv[1]))
    operator_settings.use(settings)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kopf.configure(verbose=False, log_format=kopf.LogFormat.FULL)
    asyncio.run(kopf.operator(namespaces=settings.namespaces, clusterwide=False, standalone=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

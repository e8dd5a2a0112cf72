"""Dev machinery: the local stack (`docpipe dev`), the mocks a command or a test starts, the
ports they need, and the lifeline that makes every child die with docpipe.

- `dev_stack.py`: `docpipe dev` (database, mocks, samples, Dagster's processes, the API).
- `mocks.py`: `start_mocks`, the one way the CLI, `docpipe dev`, the tests and the benchmarks
  start the mocks (`python -m docpipe_dagster_mocks`) and wait until they answer.
- `services.py`: the services one command needs (`ingest --wait`, `search`), probed or mocked.
- `ports.py`: free ports, taken ports and who holds them.
- `lifeline.py`: children that die with docpipe however it ends (standard library only, so
  `store/` may use it for the embedded Postgres).
- `supervision.py`: `docpipe dev`'s database watch and the gate on its children's output.

Nothing is imported here: `python -m docpipe_dagster.local.lifeline` must stay light.
"""

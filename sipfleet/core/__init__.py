"""The application core: one pure object owning the whole node.

``build_core`` (``sipfleet.core.factory``) makes a ``Core``
(``sipfleet.core.node``) from the config, the store's contents and a few
injected effects (the packet sink, the clock, a lock factory); the server
(``sipfleet.aio.app``), the tests and the benchmarks all build it the same
way. The admin service (set_state, drain, undrain, drain status, "drained")
is ``sipfleet.core.admin``. Nothing here imports asyncio, sockets or threads.
"""

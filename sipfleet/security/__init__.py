"""Edge security, sans I/O: who may call, flood and scanner bans, overload
shedding and resource bounds (issue 11).

    settings.py   SecuritySettings, TrunkSpec: plain objects built from the config
    trunks.py     TrunkTable: which source addresses are trunks (CIDR, port, transport)
    bans.py       BanTable: banned addresses, why and until when; repeat offenders
    sources.py    SourceTable: per-source request density (pike) and scan signatures
    gate.py       Gate: the one object the proxy core asks, before and after parsing

Nothing here touches a socket or a clock: the time comes in as ``now``.
"""

"""How records leave the process: the sender and its sinks, the embedded
local services, the offline spool, console capture and `mltrail run`'s launcher."""

"""How a job's ranks talk across servers: NCCL's transport over persistent RC QPs (:mod:`.nccl`,
:mod:`.connection`, :mod:`.settings`), or one idealised QP per message (:mod:`.ideal`)."""

"""OLink scale-up: the link layer (credits per virtual channel, link-level retry, light FEC), the OLink
switch, and the names and constants the GPU server, the scenario helpers and the estimator share."""

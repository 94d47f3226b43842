"""The neutral model: the resolved scenario (scenario.py), the job IR (job.py), units and faults.

Pure data and pure functions. The kernel, the device kinds, the services and the orchestrator all
import it; it imports none of them.
"""

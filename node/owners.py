"""Files named by the pid of the process that made them: whether that owner still runs.

Our shared memory (broker/shm.py) and a still store's private folders (node/still_store.py)
carry their maker's pid in their name, so that what a process killed with SIGKILL left is
removed by the next one: only once this says its owner is gone.
"""

from __future__ import annotations

import os


def runs(pid: int) -> bool:
    """Whether ``pid`` is a process (a zombie counts: its parent may not have reaped it yet; so
    does another user's, whose files are not ours to remove)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False
    return True

"""The dead-letter queue: retrying the web app's `dead_letter_queue` entries.

`PermanentFailure` is what a Python handler (entry-point group
`jobwarden.dlq_handlers`) raises to fail an entry at once; `Entry` is what it is given.
"""

from jobwarden.dlq.handlers import PermanentFailure
from jobwarden.dlq.queue import Entry

__all__ = ["Entry", "PermanentFailure"]

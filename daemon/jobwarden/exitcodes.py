"""Process exit statuses, chosen from sysexits.h so systemd can tell them apart.

`systemd/jobwarden.service` lists the permanent ones in `RestartPreventExitStatus=`:
restarting cannot fix a bad configuration or a database jobwarden refuses to touch.
"""

OK = 0
FAILURE = 1
USAGE = 64  # EX_USAGE: bad command line
SCHEMA_REFUSED = 65  # EX_DATAERR: migrations edited/unknown, shared columns missing
DATABASE_UNAVAILABLE = 69  # EX_UNAVAILABLE: authentication or catalog errors
CONFIG = 78  # EX_CONFIG: invalid configuration

"""Change capture: jobs written by any application reach the queue and the lists.

- ``decide``: what a job document calls for (embed, leave the lists, nothing), and whether it fits at all.
- ``act``: doing it for a batch of changed jobs, as the API would have.
- ``sweep``: every job compared by text hash and status, in keyset pages (after lost history, and in poll mode).
- ``follow``: the worker's follower: one process at a time under a lease, on the change stream (resume token
  stored after each handled batch) or by polling ``updatedAt`` where the database has no change streams.
"""

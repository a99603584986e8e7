"""The on-disk format tag of an activation store, shared by the writer (:mod:`.cache`) and the reader (:mod:`.store`).

It lives in its own module so that the reader does not import the writer (the
writer returns a reader, so that import would close a cycle).
"""

FORMAT = "universality.activations/1"
"""``manifest.json``'s ``format`` value; a store with another value is refused by :class:`~universality.activations.store.ActivationStore`."""

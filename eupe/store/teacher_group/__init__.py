"""One teacher's part of a feature store: identity, view blocks, checked reads, chunk writes.

Import each name from the module that defines it (this package imports nothing):

``group``     :class:`TeacherGroup`: the opened zarr group, its parsed attributes and its collaborators.
``identity``  :class:`TeacherIdentity`, the fingerprint document and checks, array and subgroup names.
``create``    :func:`create_teacher`, :func:`create_block`: a new teacher group or view block in a store.
``blocks``    :class:`ViewBlocks` (``group.blocks``): the view blocks in view order, growing by a block.
``reader``    :class:`GroupReader` (``group.reader``): checked reads of views, status and targets.
``writer``    :class:`GroupWriter` (``group.writer``) and :class:`ChunkResult`: writing one chunk.
``chunks``    :class:`ChunkProgress` (``group.chunks``): done chunks, pending chunks, counts, claims.
``checks``    :class:`ChunkChecks` (``group.checks``): a chunk's files checked against its manifest.
``handle``    :class:`GroupHandle`: the protocol of a group its collaborators are typed against.
"""

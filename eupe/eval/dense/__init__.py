"""Dense evaluation building blocks: metrics, linear heads, frozen-feature caching, loaders, fixtures.

The task modules ``eupe/eval/tasks/{seg,depth,corr}.py`` put these together: features are
extracted once per image in batches on the context's device, heads train on the cached features
(no backbone forward per step), and every offline fixture is labelled as such.
"""

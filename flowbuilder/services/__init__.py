"""The narrow services a :class:`~flowbuilder.context.RunContext` hands a node.

- ``ctx.models`` — :class:`~flowbuilder.services.models.ModelService`: local models by
  id (through the file-access policy), kept loaded between runs, llama.cpp's own thread;
- ``ctx.providers`` — :class:`~flowbuilder.services.providers.ProviderService`: chat,
  structured chat, embeddings and an endpoint's other APIs (audio, images) by model id;
- ``ctx.knowledge`` — :class:`~flowbuilder.services.knowledge.KnowledgeService`: the
  knowledge bases a node may open, write and search;
- ``ctx.artifacts`` — :class:`~flowbuilder.services.artifacts.ArtifactService`: store
  bytes or an open file, read a reference's file;
- ``ctx.files`` — :class:`~flowbuilder.files.NodeFiles`: the file-access policy.

Each is made from the run's raw parts (artifact store, model cache, provider registry,
settings, policy), which nodes never see.
"""

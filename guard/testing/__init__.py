"""Test and benchmark helpers that ship with the package.

``guard.testing.fake_openai`` is a fake OpenAI-compatible chat server over real HTTP; see its docstring.
``guard.testing.judges.ScriptedJudge`` decides by substring, for tests of everything around the judge.
Neither is imported here, so ``import guard.testing`` stays free of aiohttp."""

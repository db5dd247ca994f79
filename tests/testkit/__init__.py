"""Tests of testkit itself: the PIOPIY simulator, scenarios, expectations, replay, the fake LLM."""

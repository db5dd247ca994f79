"""Hotline's test doubles, installed with the dev set only (the service never imports them): the PIOPIY
simulator, scenarios and expectations, replay, caller voices, fake LLM, PIOPIY REST and tool backends."""

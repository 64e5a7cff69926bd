"""The miniature: the paper's experiment at laptop scale. Verifiable task families (``tasks``), a small Llama-style
model pre-trained from scratch and SFT'd on them (``build``), on-policy preference pairs sampled from it and checked
by the verifiers (``pairs``). ``python -m miniature build`` builds both; eval/tasks/miniature scores the benchmark."""

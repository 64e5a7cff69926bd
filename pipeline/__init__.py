"""The chains that use both training and evaluation: ``pipeline.run`` trains one config, then evaluates its final
model. The one place that imports both align/ and eval/ (tests/test_imports.py)."""

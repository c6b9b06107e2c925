"""Root conftest: load the suite's fixtures (the plugin itself comes from the pytest11 entry point)."""

pytest_plugins = ["fixtures.namespaces", "fixtures.workloads", "fixtures.stack", "fixtures.versions", "fixtures.metrics",
                  "fixtures.notebook", "fixtures.recovery"]

"""The local multi-cluster environment: toolchain, clusters, demo, benchmarks and e2e tests."""

// Runs the pinned conformance suite (@durable-streams/server-conformance-tests) against
// CONFORMANCE_TEST_URL. Its own CLI asks vitest for a file under node_modules, which
// vitest excludes by default, so this config names the suite's runner file directly.
export default {
  test: {
    include: ["node_modules/@durable-streams/server-conformance-tests/dist/test-runner.js"],
    exclude: [],
    watch: false,
  },
}

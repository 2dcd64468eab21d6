// A non-Python client: the buf-generated TS client over native gRPC (HTTP/2) with @connectrpc/connect-node.
// Bundled with esbuild by tests/e2e/test_web_console.py, then run as: node node_client.mjs http://127.0.0.1:<port>
// Prints the unary Generate reply and the streamed events as one JSON line.
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { OrchestratorService } from "../src/gen/llmorch/v1/orchestrator_pb.js";

const baseUrl = process.argv[2];
if (!baseUrl) {
  console.error("usage: node node_client.mjs <base-url>");
  process.exit(2);
}
const client = createClient(OrchestratorService, createGrpcTransport({ baseUrl }));

const reply = await client.generate(
  { requestId: "node-1", prompt: "hello from node", rag: { collection: "docs", topK: 2 } },
  { timeoutMs: 10_000 },
);
const events: string[] = [];
for await (const event of client.generateStream({ request: { prompt: "hello from node" } }, { timeoutMs: 10_000 })) {
  events.push(event.event.case ?? "none");
}
const models = await client.listModels({}, { timeoutMs: 5_000 });
console.log(
  JSON.stringify({
    requestId: reply.requestId,
    text: reply.text,
    model: reply.provenance?.modelId,
    citations: reply.provenance?.citations.map((c) => c.chunkId),
    events,
    models: models.models.map((m) => m.modelId),
  }),
);

// A minimal Agent Hub agent in Node.js: `node:http` and `node:crypto`, no packages.
//
// The hub POSTs each batch of new contact messages here, signed with Standard Webhooks. The agent
// checks the signature (a bad one gets 401) and answers inline with {"reply": "..."}, which the
// hub stores as an AGENT message and sends to the contact. The guide is docs/agents.md.
//
//     AGENT_WEBHOOK_SECRET=whsec_... node examples/agent.mjs
//
// It listens on http://127.0.0.1:8001/ (set HOST and PORT to change that; PORT=0 picks a free
// port) and prints the URL to register as the agent's `webhook_url`.
//
// `verify` below is what the `standardwebhooks` npm package does; with that package installed,
// `new Webhook(secret).verify(body, req.headers)` replaces it.

import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const SECRET = process.env.AGENT_WEBHOOK_SECRET ?? ""; // the agent's `webhook_secret`
if (!SECRET.startsWith("whsec_")) {
  console.error("set AGENT_WEBHOOK_SECRET to the agent's webhook_secret (whsec_...)");
  process.exit(1);
}
// The HMAC key is the base64-decoded part after "whsec_", not the string itself.
const KEY = Buffer.from(SECRET.slice("whsec_".length), "base64");
const TOLERANCE_SECONDS = 5 * 60;

function verify(headers, body) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures || !/^\d+$/.test(timestamp)) return false;
  // An old (or future) timestamp is refused, so a captured request cannot be replayed later.
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_SECONDS) return false;
  const expected = createHmac("sha256", KEY).update(`${id}.${timestamp}.`).update(body).digest();
  // "v1,<sig> v1,<sig>": while a secret is being rotated, any one of them may match.
  return signatures.split(" ").some((entry) => {
    const [version, signature] = entry.split(",");
    if (version !== "v1" || !signature) return false;
    const given = Buffer.from(signature, "base64");
    // Constant-time comparison, so response timing reveals nothing about the right signature.
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

// The agent itself: here, echo the newest message this delivery is about.
function answer(delivery) {
  const newIds = new Set(delivery.new_message_ids);
  const texts = delivery.messages.filter((m) => newIds.has(m.id)).map((m) => m.content);
  return { reply: `echo: ${texts.at(-1) ?? ""}` };
}

// Answers by webhook-id. The hub retries a delivery (same webhook-id) when our answer did not
// reach it in time; the retry then gets the answer already worked out, not a second run of the work.
const answers = new Map();
const ANSWERS_KEPT = 1000;

function sendJson(res, status, data) {
  res.writeHead(status, { "Content-Type": "application/json" }).end(JSON.stringify(data));
}

const server = createServer(async (req, res) => {
  if (req.method !== "POST") return sendJson(res, 405, { detail: "POST only" });
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks); // the raw bytes: the signature covers them exactly
  if (!verify(req.headers, body)) return sendJson(res, 401, { detail: "invalid signature" });

  const webhookId = req.headers["webhook-id"];
  let result = answers.get(webhookId);
  if (!result) {
    result = answer(JSON.parse(body.toString("utf8")));
    answers.set(webhookId, result);
    if (answers.size > ANSWERS_KEPT) answers.delete(answers.keys().next().value);
  }
  console.log(`${webhookId} -> ${JSON.stringify(result)}`);
  sendJson(res, 200, result);
});

const host = process.env.HOST ?? "127.0.0.1";
server.listen(Number(process.env.PORT ?? 8001), host, () => {
  console.log(`agent listening on http://${host}:${server.address().port}/`);
});

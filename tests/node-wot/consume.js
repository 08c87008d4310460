// node-wot consuming the gateway's Things: `node consume.js http|mqtt DIRECTORY USER PASSWORD`.
// It fetches the TD listing (with the caller's credentials), consumes every Thing, prints
// {"ready": [...]}, then runs one JSON step per stdin line and prints one JSON result per step:
//   {"id", "op": "read"|"readall"|"write"|"invoke"|"observe"|"subscribe"|"stop", "thing", "name", ...}
// Observations and event subscriptions print {"id", "value"} lines as data arrives.
"use strict";
const { Servient } = require("@node-wot/core");
const readline = require("readline");

function out(doc) {
  process.stdout.write(JSON.stringify(doc) + "\n");
}

async function main() {
  const [mode, directory, user, password] = process.argv.slice(2);
  const servient = new Servient();
  if (mode === "http") {
    const { HttpClientFactory } = require("@node-wot/binding-http");
    servient.addClientFactory(new HttpClientFactory(null));
  } else {
    const { MqttClientFactory } = require("@node-wot/binding-mqtt");
    servient.addClientFactory(new MqttClientFactory());
  }
  const WoT = await servient.start();
  const auth = "Basic " + Buffer.from(`${user}:${password}`).toString("base64");
  const response = await fetch(directory, { headers: { authorization: auth } });
  if (!response.ok) throw new Error(`directory answered ${response.status}`);
  const listing = await response.json();
  const things = {};
  for (const td of listing) {
    servient.addCredentials({ [td.id]: { username: user, password } });
    things[td.title] = await WoT.consume(td);
  }
  const subscriptions = {};
  out({ ready: Object.keys(things) });
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const step = JSON.parse(line);
    const thing = things[step.thing];
    try {
      let result = null;
      if (step.op === "read") {
        result = await (await thing.readProperty(step.name)).value();
      } else if (step.op === "readall") {
        const map = await thing.readAllProperties();
        result = {};
        for (const [name, output] of map) result[name] = await output.value();
      } else if (step.op === "write") {
        await thing.writeProperty(step.name, step.value);
      } else if (step.op === "invoke") {
        const output = await thing.invokeAction(step.name, step.input);
        // an action without an output schema (a service bound to writes) answers nothing
        result = output ? await output.value().catch(() => null) : null;
      } else if (step.op === "observe" || step.op === "subscribe") {
        const listener = async (data) => {
          try {
            out({ id: step.id, value: await data.value() });
          } catch (e) {
            out({ id: step.id, invalid: String((e && e.message) || e) });
          }
        };
        subscriptions[step.id] = step.op === "observe"
          ? await thing.observeProperty(step.name, listener)
          : await thing.subscribeEvent(step.name, listener);
      } else if (step.op === "stop") {
        await subscriptions[step.of].stop();
      }
      out({ id: step.id, ok: true, result });
    } catch (e) {
      out({ id: step.id, ok: false, error: String((e && e.message) || e) });
    }
  }
  process.exit(0);
}

main().catch((e) => {
  out({ fatal: String((e && e.stack) || e) });
  process.exit(1);
});

// A foreign OPC UA server for the OPC UA driver's interop tests: node-opcua shares no code
// with asyncua or this project. Usage: node server.js PORT PKI_DIR [LOAD [PERIOD_MS]]
// LOAD > 0 adds Load.0 .. Load.<LOAD-1> (Double), all changed every PERIOD_MS (default 10),
// for benchmarks/opcua_notifications.py.
// Offers None, Basic256Sha256 Sign and SignAndEncrypt on one endpoint URL; accepts anonymous
// users and operator/secret. Prints "READY <port>" when listening and stops on SIGTERM.
"use strict";
const {
  OPCUAServer, OPCUACertificateManager, Variant, DataType, StatusCodes,
  MessageSecurityMode, SecurityPolicy,
} = require("node-opcua");

const port = Number(process.argv[2] || 4841);
const pki = process.argv[3] || "./pki";
const load = Number(process.argv[4] || 0);
const loadPeriod = Number(process.argv[5] || 10);
const NS_URI = "urn:citytwin:test:node-opcua";

async function main() {
  const serverCertificateManager = new OPCUACertificateManager({
    rootFolder: pki,
    automaticallyAcceptUnknownCertificate: true, // the test is about the client's trust, not ours
    disableFileWatchers: true,
  });
  const server = new OPCUAServer({
    port,
    resourcePath: "/UA/Peer",
    serverCertificateManager,
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
    securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
    allowAnonymous: true,
    userManager: { isValidUser: (user, password) => user === "operator" && password === "secret" },
    serverInfo: { applicationUri: "urn:citytwin:test:node-opcua-peer" },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.registerNamespace(NS_URI);
  const device = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Peer", nodeId: "s=Peer" });

  const state = { counter: 0, temperature: 21.5, enabled: true, setpoint: 7, total: 0 };
  const variable = (name, dataType, key, writable) => ns.addVariable({
    componentOf: device,
    browseName: name,
    nodeId: `s=${name}`,
    dataType,
    minimumSamplingInterval: 50,
    accessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
    userAccessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
    value: {
      get: () => new Variant({ dataType, value: state[key] }),
      set: writable ? (v) => {
        if (v.dataType !== dataType) return StatusCodes.BadTypeMismatch;
        state[key] = v.value;
        return StatusCodes.Good;
      } : undefined,
    },
  });
  const counter = variable("Counter", DataType.UInt32, "counter", false);
  variable("Temperature", DataType.Double, "temperature", false);
  variable("Enabled", DataType.Boolean, "enabled", true);
  variable("Setpoint", DataType.Int32, "setpoint", true);
  // a numeric NodeId too (ns=N;i=1001)
  ns.addVariable({
    componentOf: device, browseName: "Total", nodeId: "i=1001", dataType: DataType.Int32,
    minimumSamplingInterval: 50,
    value: { get: () => new Variant({ dataType: DataType.Int32, value: state.total }) },
  });

  // Add(a: Int32, b: Int32) -> sum: Int32; node-opcua refuses arguments of another type
  const add = ns.addMethod(device, {
    browseName: "Add",
    nodeId: "s=Add",
    inputArguments: [
      { name: "a", dataType: DataType.Int32 },
      { name: "b", dataType: DataType.Int32 },
    ],
    outputArguments: [{ name: "sum", dataType: DataType.Int32 }],
  });
  add.bindMethod((inputArguments, _context, callback) => {
    const [a, b] = inputArguments;
    if (a.dataType !== DataType.Int32 || b.dataType !== DataType.Int32) {
      return callback(null, { statusCode: StatusCodes.BadTypeMismatch });
    }
    state.total = a.value + b.value;
    callback(null, {
      statusCode: StatusCodes.Good,
      outputArguments: [{ dataType: DataType.Int32, value: state.total }],
    });
  });

  const loadVars = [];
  for (let i = 0; i < load; i++) {
    loadVars.push(ns.addVariable({
      componentOf: device, browseName: `Load.${i}`, nodeId: `s=Load.${i}`, dataType: DataType.Double,
      minimumSamplingInterval: 0, value: { dataType: DataType.Double, value: 0 },
    }));
  }
  let loadValue = 0;
  const loadTicker = load > 0 ? setInterval(() => {
    loadValue += 1;
    for (const v of loadVars) v.setValueFromSource({ dataType: DataType.Double, value: loadValue });
  }, loadPeriod) : null;

  const ticker = setInterval(() => {
    state.counter += 1;
    counter.touchValue();
  }, 50);

  await server.start();
  process.stdout.write(`READY ${server.endpoints[0].port}\n`);
  const stop = async () => {
    clearInterval(ticker);
    if (loadTicker) clearInterval(loadTicker);
    await server.shutdown(0);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  process.stderr.write(`node-opcua peer failed: ${err && err.stack}\n`);
  process.exit(1);
});

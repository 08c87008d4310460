// A foreign BACnet/IP device for the BACnet driver's interop tests, on @bacnet-js/client
// (a pure TypeScript stack sharing no code with bacpypes3). It answers Who-Is (to the
// asker: broadcasts do not reach loopback peers), ReadProperty, ReadPropertyMultiple,
// WriteProperty with a 16-level priority array and relinquish (Null), and SubscribeCOV with
// lifetimes; one object refuses COV so the driver's poll fallback is exercised.
//
//   node device.js PORT [DEVICE_ID]
// stdin takes JSON lines: {"op":"set","object":"analog-input,1","value":22.5},
// {"op":"flags","object":"analog-value,1","flags":[0,0,0,1]}, {"op":"cov","object":"analog-input,2",
// "allow":true}, {"op":"dump"};
// stdout gives JSON lines: listening, write, subscribe, state.
'use strict'
const readline = require('readline')
const bacnet = require('@bacnet-js/client')
const { ObjectType: OT, PropertyIdentifier: P, ApplicationTag: T, ErrorClass, ErrorCode,
  ConfirmedServiceChoice: S, StatusFlagsBitString } = bacnet
const Client = bacnet.default

const port = parseInt(process.argv[2] || '47808', 10)
const deviceId = parseInt(process.argv[3] || '2002', 10)
const out = (msg) => process.stdout.write(JSON.stringify(msg) + '\n')

const TYPE_NAMES = {
  'analog-input': OT.ANALOG_INPUT, 'analog-value': OT.ANALOG_VALUE, 'binary-output': OT.BINARY_OUTPUT,
  'multi-state-value': OT.MULTI_STATE_VALUE, device: OT.DEVICE,
}
const key = (type, instance) => `${type}:${instance}`
const parseName = (text) => {
  const [name, instance] = text.split(',')
  return key(TYPE_NAMES[name], parseInt(instance, 10))
}

// the objects: value tags per type; commandable ones keep a priority array
const objects = new Map()
function add(type, instance, name, tag, value, opts = {}) {
  objects.set(key(type, instance), {
    type, instance, name, tag, value, flags: [0, 0, 0, 0], units: opts.units,
    commandable: !!opts.commandable, priorities: new Array(16).fill(null),
    relinquishDefault: value, noCov: !!opts.noCov,
  })
}
add(OT.DEVICE, deviceId, 'js-peer-device', T.ENUMERATED, 0)
add(OT.ANALOG_INPUT, 1, 'zone-temp', T.REAL, 21.5, { units: 62 })
add(OT.ANALOG_INPUT, 2, 'zone-co2', T.REAL, 450, { units: 96, noCov: true })
add(OT.ANALOG_VALUE, 1, 'zone-temp-setpoint', T.REAL, 21.0, { units: 62, commandable: true })
add(OT.BINARY_OUTPUT, 1, 'zone-lights', T.ENUMERATED, 0, { commandable: true })
add(OT.MULTI_STATE_VALUE, 1, 'zone-mode', T.UNSIGNED_INTEGER, 1)

const subscriptions = new Map() // `${address}|${processId}|${objectKey}` -> {address, processId, obj, confirmed, expires}

function flagsValue(obj) {
  const set = obj.flags.map((bit, i) => (bit ? i : -1)).filter((i) => i >= 0)
  return { type: T.BIT_STRING, value: new StatusFlagsBitString(...set) }
}

function propertyValue(obj, id) {
  switch (id) {
    case P.PRESENT_VALUE:
      if (obj.type === OT.DEVICE) break
      return [{ type: obj.tag, value: obj.value }]
    case P.STATUS_FLAGS: return [flagsValue(obj)]
    case P.OBJECT_NAME: return [{ type: T.CHARACTER_STRING, value: obj.name }]
    case P.OBJECT_IDENTIFIER: return [{ type: T.OBJECTIDENTIFIER, value: { type: obj.type, instance: obj.instance } }]
    case P.OBJECT_TYPE: return [{ type: T.ENUMERATED, value: obj.type }]
    case P.OUT_OF_SERVICE: return [{ type: T.BOOLEAN, value: !!obj.flags[3] }]
    case P.SYSTEM_STATUS: if (obj.type === OT.DEVICE) return [{ type: T.ENUMERATED, value: 0 }]; break
    case P.UNITS: if (obj.units !== undefined) return [{ type: T.ENUMERATED, value: obj.units }]; break
    case P.OBJECT_LIST:
      if (obj.type === OT.DEVICE) {
        return [...objects.values()].map((o) => ({ type: T.OBJECTIDENTIFIER, value: { type: o.type, instance: o.instance } }))
      }
      break
    case P.RELINQUISH_DEFAULT: if (obj.commandable) return [{ type: obj.tag, value: obj.relinquishDefault }]; break
    case P.PRIORITY_ARRAY:
      if (obj.commandable) return obj.priorities.map((v) => (v === null ? { type: T.NULL, value: null } : { type: obj.tag, value: v }))
      break
  }
  return null
}

const client = new Client({ port, interface: '127.0.0.1', broadcastAddress: '127.255.255.255', apduTimeout: 2000 })
client.on('error', (err) => out({ event: 'error', message: String(err && err.message) }))

function notify(obj) {
  const now = Date.now()
  for (const [k, sub] of subscriptions) {
    if (sub.obj !== obj) continue
    if (sub.expires !== 0 && sub.expires < now) { subscriptions.delete(k); continue }
    const remaining = sub.expires === 0 ? 0 : Math.round((sub.expires - now) / 1000)
    const values = [
      { property: { id: P.PRESENT_VALUE }, value: propertyValue(obj, P.PRESENT_VALUE) },
      { property: { id: P.STATUS_FLAGS }, value: propertyValue(obj, P.STATUS_FLAGS) },
    ]
    const oid = { type: obj.type, instance: obj.instance }
    if (sub.confirmed) {
      client.confirmedCOVNotification({ address: sub.address }, oid, sub.processId, deviceId, remaining, values)
        .then(() => out({ event: 'acked', object: obj.name, value: obj.value }))
        .catch((err) => out({ event: 'error', message: `confirmed COV: ${err.message}` }))
    } else {
      client.unconfirmedCOVNotification({ address: sub.address }, sub.processId, deviceId, oid, remaining, values)
    }
  }
}

function recalculate(obj) {
  if (!obj.commandable) return
  const active = obj.priorities.find((v) => v !== null)
  obj.value = active === undefined ? obj.relinquishDefault : active
}

client.on('whoIs', (content) => {
  const { lowLimit, highLimit } = content.payload
  if (lowLimit !== undefined && (deviceId < lowLimit || deviceId > highLimit)) return
  client.iAmResponse({ address: content.header.sender.address }, deviceId, 3 /* no segmentation */, 260)
})

client.on('readProperty', (content) => {
  const sender = content.header.sender
  const { objectId, property } = content.payload
  const obj = objects.get(key(objectId.type, objectId.instance))
  if (!obj) return client.errorResponse(sender, S.READ_PROPERTY, content.invokeId, ErrorClass.OBJECT, ErrorCode.UNKNOWN_OBJECT)
  const value = propertyValue(obj, property.id)
  if (!value) return client.errorResponse(sender, S.READ_PROPERTY, content.invokeId, ErrorClass.PROPERTY, ErrorCode.UNKNOWN_PROPERTY)
  client.readPropertyResponse(sender, content.invokeId, objectId, property, value)
})

client.on('readPropertyMultiple', (content) => {
  const sender = content.header.sender
  const results = content.payload.properties.map((spec) => {
    const obj = objects.get(key(spec.objectId.type, spec.objectId.instance))
    return {
      objectId: spec.objectId,
      values: spec.properties.map((prop) => {
        const value = obj ? propertyValue(obj, prop.id) : null
        if (value) return { property: prop, value }
        const error = obj ? { errorClass: ErrorClass.PROPERTY, errorCode: ErrorCode.UNKNOWN_PROPERTY }
          : { errorClass: ErrorClass.OBJECT, errorCode: ErrorCode.UNKNOWN_OBJECT }
        return { property: prop, value: [{ value: { type: 'BacnetError', ...error } }] }
      }),
    }
  })
  client.readPropertyMultipleResponse(sender, content.invokeId, results)
})

client.on('writeProperty', (content) => {
  const sender = content.header.sender
  const { objectId, value } = content.payload
  const obj = objects.get(key(objectId.type, objectId.instance))
  const deny = (cls, code) => client.errorResponse(sender, S.WRITE_PROPERTY, content.invokeId, cls, code)
  if (!obj) return deny(ErrorClass.OBJECT, ErrorCode.UNKNOWN_OBJECT)
  if (value.property.id !== P.PRESENT_VALUE) return deny(ErrorClass.PROPERTY, ErrorCode.WRITE_ACCESS_DENIED)
  const item = value.value[0]
  const priority = value.priority >= 1 && value.priority <= 16 ? value.priority : 16
  out({ event: 'write', object: obj.name, value: item.type === T.NULL ? null : item.value, tag: item.type, priority: value.priority })
  if (obj.commandable) {
    obj.priorities[priority - 1] = item.type === T.NULL ? null : item.value
    recalculate(obj)
  } else if (obj.type === OT.ANALOG_INPUT && !obj.flags[3]) {
    return deny(ErrorClass.PROPERTY, ErrorCode.WRITE_ACCESS_DENIED)
  } else {
    if (item.type === T.NULL) return deny(ErrorClass.PROPERTY, ErrorCode.INVALID_DATA_TYPE || 9)
    obj.value = item.value
  }
  client.simpleAckResponse(sender, S.WRITE_PROPERTY, content.invokeId)
  notify(obj)
})

client.on('subscribeCov', (content) => {
  const sender = content.header.sender
  const p = content.payload
  const obj = objects.get(key(p.monitoredObjectId.type, p.monitoredObjectId.instance))
  if (!obj) return client.errorResponse(sender, S.SUBSCRIBE_COV, content.invokeId, ErrorClass.OBJECT, ErrorCode.UNKNOWN_OBJECT)
  if (obj.noCov) {
    out({ event: 'subscribe', object: obj.name, refused: true })
    return client.errorResponse(sender, S.SUBSCRIBE_COV, content.invokeId, ErrorClass.SERVICES, ErrorCode.COV_SUBSCRIPTION_FAILED)
  }
  const k = `${sender.address}|${p.subscriberProcessId}|${key(obj.type, obj.instance)}`
  const cancel = p.lifetime === undefined && p.issueConfirmedNotifications === undefined
  if (cancel) {
    subscriptions.delete(k)
  } else {
    const lifetime = p.lifetime || 0
    subscriptions.set(k, {
      address: sender.address, processId: p.subscriberProcessId, obj,
      confirmed: !!p.issueConfirmedNotifications, expires: lifetime ? Date.now() + lifetime * 1000 : 0,
    })
  }
  out({ event: 'subscribe', object: obj.name, process: p.subscriberProcessId, lifetime: p.lifetime, confirmed: !!p.issueConfirmedNotifications, cancel })
  client.simpleAckResponse(sender, S.SUBSCRIBE_COV, content.invokeId)
  if (!cancel) setImmediate(() => notify(obj)) // the initial notification, after the ack
})

const commands = readline.createInterface({ input: process.stdin })
commands.on('line', (line) => {
  let cmd
  try { cmd = JSON.parse(line) } catch { return out({ event: 'error', message: `bad command ${line}` }) }
  const obj = cmd.object ? objects.get(parseName(cmd.object)) : undefined
  if (cmd.op === 'set' && obj) {
    if (obj.commandable) { obj.relinquishDefault = cmd.value; recalculate(obj) } else obj.value = cmd.value
    notify(obj)
  } else if (cmd.op === 'flags' && obj) {
    obj.flags = cmd.flags
    notify(obj)
  } else if (cmd.op === 'cov' && obj) {
    obj.noCov = !cmd.allow
  } else if (cmd.op !== 'dump') {
    return out({ event: 'error', message: `unknown command ${line}` })
  }
  const state = {}
  for (const o of objects.values()) state[o.name] = { value: o.value, flags: o.flags, priorities: o.priorities }
  out({ event: 'state', objects: state, subscriptions: [...subscriptions.values()].map((s) => ({ object: s.obj.name, process: s.processId })) })
})
commands.on('close', () => process.exit(0))

client.on('listening', () => out({ event: 'listening', port }))

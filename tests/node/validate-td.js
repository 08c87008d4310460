// Validate Thing Descriptions with the Eclipse Thingweb playground's full validator.
// Usage: node validate-td.js FILE... ; prints one JSON line per file with the playground's report
// and exits 1 if any check failed. JSON-LD expansion is skipped: it fetches the TD context over
// the network, which tests must not need.
"use strict";
const fs = require("fs");
const { tdValidator } = require("@thing-description-playground/core");

async function main(files) {
  let failed = false;
  for (const file of files) {
    const logs = [];
    const result = await tdValidator(fs.readFileSync(file, "utf8"), (line) => logs.push(String(line)),
      { checkDefaults: true, checkJsonLd: false, checkTmConformance: false });
    const bad = Object.entries(result.report).filter(([, v]) => v === "failed")
      .concat(Object.entries(result.details).filter(([, v]) => v === "failed"));
    if (bad.length) failed = true;
    console.log(JSON.stringify({ file, report: result.report, details: result.details, logs }));
  }
  process.exit(failed ? 1 : 0);
}

main(process.argv.slice(2)).catch((err) => { console.error(err); process.exit(2); });

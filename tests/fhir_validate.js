// Validate FHIR R4 resources with FHIR.js (npm "fhir", installed into .tools/ by
// `make setup`): a JSON array of resources on stdin, a JSON array of
// {valid, messages} on stdout, one per resource. Used by tests/fhir_check.py.
const path = require("path");
const { Fhir } = require(path.join(__dirname, "..", ".tools", "node_modules", "fhir"));

const fhir = new Fhir(); // the R4 (4.0.1) structure definitions and value sets it ships
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const results = JSON.parse(input).map((resource) =>
    fhir.validate(resource, { errorOnUnexpected: true }));
  process.stdout.write(JSON.stringify(results));
});

// node validate.mjs DASHBOARD.json... — validates each dashboard against @grafana/schema (pinned in package.json):
// the Dashboard type (panels, rows, variables, links, time) and, per panel, its plugin's Options and the field
// config's `custom` (timeseries, table). The JSON schemas are generated from the package's TypeScript types with
// ts-json-schema-generator, so a key the types do not have, or a value of the wrong type, fails.
// Prints one line per error and "N dashboards, M panels valid"; exits 1 on any error.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import { createGenerator } from "ts-json-schema-generator";

const here = dirname(fileURLToPath(import.meta.url));
const raw = join(here, "node_modules/@grafana/schema/dist/esm/raw");
const tsconfig = join(here, "tsconfig.json");

function schema(path, type) {
  const config = { path: join(raw, path), type, tsconfig, skipTypeCheck: true, additionalProperties: false };
  return createGenerator(config).createSchema(type);
}

// Panel plugin → (its Options type, its FieldConfig type for fieldConfig.defaults.custom, if it has one).
const PLUGINS = {
  gauge: ["composable/gauge/panelcfg/x/GaugePanelCfg_types.gen.d.ts", false],
  stat: ["composable/stat/panelcfg/x/StatPanelCfg_types.gen.d.ts", false],
  timeseries: ["composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.d.ts", true],
  table: ["composable/table/panelcfg/x/TablePanelCfg_types.gen.d.ts", true],
};

const ajv = new Ajv({ allErrors: true, strict: false });
const dashboard = ajv.compile(schema("dashboard/x/dashboard_types.gen.d.ts", "Dashboard"));
const options = {};
const custom = {};
for (const [kind, [path, hasFieldConfig]] of Object.entries(PLUGINS)) {
  options[kind] = ajv.compile(schema(path, "Options"));
  if (hasFieldConfig) custom[kind] = ajv.compile(schema(path, "FieldConfig"));
}

function report(where, validate) {
  return (validate.errors || []).map(
    (e) => `${where}${e.instancePath}: ${e.message}${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ""}`,
  );
}

const errors = [];
let boards = 0;
let panels = 0;
for (const file of process.argv.slice(2)) {
  const board = JSON.parse(readFileSync(file, "utf8"));
  boards += 1;
  if (!dashboard(board)) errors.push(...report(file, dashboard));
  for (const [i, panel] of (board.panels || []).entries()) {
    if (panel.type === "row") continue;
    panels += 1;
    const where = `${file}: panels[${i}] ${JSON.stringify(panel.title)}`;
    const kind = panel.type;
    if (!(kind in options)) {
      errors.push(`${where}: panel type ${kind} has no schema here`);
      continue;
    }
    if (!options[kind](panel.options || {})) errors.push(...report(`${where} options`, options[kind]));
    const c = panel.fieldConfig?.defaults?.custom;
    if (c !== undefined && kind in custom && !custom[kind](c)) errors.push(...report(`${where} custom`, custom[kind]));
  }
}
for (const e of errors) console.log(e);
console.log(`${boards} dashboards, ${panels} panels ${errors.length ? `: ${errors.length} errors` : "valid"}`);
process.exit(errors.length ? 1 : 0);

// node tests/k8s/validate.mjs < manifests.yaml: validates every object of a YAML stream
// (what `kubectl kustomize` prints) against the Kubernetes API schemas of the pinned
// kubernetes-models, offline. On success prints the objects as one JSON array (for the
// caller's own checks) and exits 0; otherwise prints each problem to stderr, exits 1.
//
// Strict: the models' validate() checks types, required fields and formats but lets any
// unknown field through (their schemas allow additional properties). The validator reads
// every field its schema knows, so each object is handed to it behind a Proxy that
// records the fields read: a field never read is unknown to the schema (a misspelt
// name, a field at the wrong level), as the API server's strict field validation says.
// Maps (labels, ConfigMap data) are enumerated by the validator, and then all their
// keys count as read.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

// apps/v1 Deployment -> kubernetes-models/apps/v1/Deployment; the core group's v1 Service
// -> kubernetes-models/v1/Service. One kind's module, not its group's: much faster.
async function modelClass(apiVersion, kind) {
    if (!/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion ?? "") || !/^[A-Z][A-Za-z0-9]*$/.test(kind ?? "")) return null;
    let mod;
    try {
        mod = await import(`kubernetes-models/${apiVersion}/${kind}`);
    } catch {
        return null;
    }
    return Object.hasOwn(mod, kind) ? mod[kind] : null;
}

// A copy of value whose objects record into `unread` how to list their unread fields.
function tracked(value, path, unread) {
    if (Array.isArray(value)) return value.map((v, i) => tracked(v, `${path}/${i}`, unread));
    if (value === null || typeof value !== "object") return value;
    const target = {};
    for (const [k, v] of Object.entries(value)) target[k] = tracked(v, `${path}/${k}`, unread);
    const read = new Set();
    let enumerated = false;
    unread.push(() => (enumerated ? [] : Object.keys(target).filter((k) => !read.has(k)).map((k) => `${path}/${k}`)));
    return new Proxy(target, {
        get(t, k, receiver) {
            if (typeof k === "string") read.add(k);
            return Reflect.get(t, k, receiver);
        },
        ownKeys(t) {
            enumerated = true;
            return Reflect.ownKeys(t);
        },
    });
}

async function problemsOf(obj) {
    const name = `${obj?.kind} ${obj?.metadata?.name}`;
    const Model = await modelClass(obj?.apiVersion, obj?.kind);
    if (!Model) return [`${name}: no schema for apiVersion ${obj?.apiVersion} kind ${obj?.kind}`];
    const model = new Model(obj);
    const unread = [];
    try {
        model.validate.call(tracked(model.toJSON(), "", unread));
    } catch (err) {
        const details = (err.errors || []).map((e) => `${e.instancePath || "/"} ${e.message}`);
        return [`${name}: ${details.length ? details.join("; ") : err.message}`];
    }
    // The outermost unknown field only: what is below it was never looked at either.
    const unknown = unread.flatMap((list) => list());
    return unknown
        .filter((path) => !unknown.some((outer) => path.startsWith(`${outer}/`)))
        .map((path) => `${name}: ${path}: unknown field`);
}

const docs = parseAllDocuments(readFileSync(0, "utf8"));
const objects = [];
const problems = [];
for (const doc of docs) {
    if (doc.errors.length) {
        problems.push(...doc.errors.map((e) => `YAML: ${e.message}`));
        continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    objects.push(obj);
    problems.push(...(await problemsOf(obj)));
}
if (objects.length === 0) problems.push("no objects in the input");
if (problems.length) {
    for (const p of problems) console.error(p);
    process.exit(1);
}
console.log(JSON.stringify(objects));

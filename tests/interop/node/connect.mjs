// One database session through Google's Node.js Cloud SQL connector
// (@google-cloud/cloud-sql-connector), used by the interop tests.
//
// Usage: node connect.mjs '<json>' where json has
//   api       SQL Admin API base URL (the emulator's)
//   token     bearer token (an OAuth2Client with only an access_token: never refreshed)
//   instance  project:region:name
//   engine    "pg" or "mysql"
//   user, password, database   database login (password omitted for IAM)
//   authType  "PASSWORD" (default) or "IAM"
//   ipType    "PUBLIC" (default), "PRIVATE" or "PSC"
// Prints one JSON line: {"ok":true,"answer":42,"user":"...","peer":{...}} or
// {"ok":false,"code":"...","message":"..."}. Exits 0 either way (2 on a hang).
import {Connector} from '@google-cloud/cloud-sql-connector';
import {OAuth2Client} from 'google-auth-library';
import pg from 'pg';
import mysql from 'mysql2/promise';

const TIMEOUT_MS = 30000;
const c = JSON.parse(process.argv[2] ?? '{}');

setTimeout(() => {
  console.log(JSON.stringify({ok: false, code: 'TEST_TIMEOUT', message: `no result within ${TIMEOUT_MS} ms`}));
  process.exit(2);
}, TIMEOUT_MS).unref();

// The server certificate as Google's own socket factory sees it (the same
// factory, TLS options and identity check the drivers get from getOptions).
function peerCertificate(stream) {
  return new Promise((resolve, reject) => {
    const s = stream();
    s.once('secureConnect', () => {
      const cert = s.getPeerCertificate(true);
      const chain = [];
      for (let x = cert; x && x.raw && chain.length < 5; x = x.issuerCertificate === x ? null : x.issuerCertificate) {
        chain.push(x.subject?.CN ?? '');
      }
      resolve({
        cn: cert.subject?.CN ?? '',
        san: cert.subjectaltname ?? '',
        chain,
        protocol: s.getProtocol(),
      });
      s.destroy();
    });
    s.once('error', reject);
  });
}

async function query(engine, opts) {
  if (engine === 'pg') {
    const client = new pg.Client({
      ...opts,
      user: c.user,
      password: c.password,
      database: c.database ?? 'postgres',
      connectionTimeoutMillis: 15000,
    });
    await client.connect();
    try {
      const r = await client.query('select 40 + 2 as answer, current_user as who');
      return {answer: Number(r.rows[0].answer), user: r.rows[0].who};
    } finally {
      await client.end();
    }
  }
  if (engine === 'mysql') {
    const conn = await mysql.createConnection({
      ...opts,
      user: c.user,
      password: c.password,
      database: c.database,
      connectTimeout: 15000,
    });
    try {
      const [rows] = await conn.query('select 40 + 2 as answer, current_user() as who');
      return {answer: Number(rows[0].answer), user: rows[0].who};
    } finally {
      await conn.end();
    }
  }
  throw new Error(`unknown engine '${engine}' (want pg or mysql)`);
}

const auth = new OAuth2Client();
auth.setCredentials({access_token: c.token});
const connector = new Connector({auth, sqlAdminAPIEndpoint: c.api});
const result = {engine: c.engine, instance: c.instance, authType: c.authType ?? 'PASSWORD'};
try {
  const opts = await connector.getOptions({
    instanceConnectionName: c.instance,
    ipType: c.ipType ?? 'PUBLIC',
    authType: c.authType ?? 'PASSWORD',
  });
  result.peer = await peerCertificate(opts.stream);
  Object.assign(result, await query(c.engine, opts));
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.code = e?.code ?? e?.name ?? 'ERROR';
  result.message = String(e?.message ?? e);
} finally {
  connector.close();
}
console.log(JSON.stringify(result));
process.exit(0);

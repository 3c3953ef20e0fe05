// Google's Node.js Cloud SQL connector (@google-cloud/cloud-sql-connector, pinned in
// tests/interop/node) as a benchmark peer: Connector.startLocalProxy on a Unix socket, so
// that pgbench and psql reach the instance through the connector's TLS tunnel.
//
// Usage: node bench/node_proxy.mjs NODE_DIR '<json>' with json {api, token, instance, path}
//   NODE_DIR  tests/interop/node (where its node_modules are)
//   path      the Unix socket to listen on (for libpq: DIR/.s.PGSQL.PORT)
// Prints "ready" once listening; runs until SIGTERM.
import {createRequire} from 'node:module';

const [nodeDir, json] = process.argv.slice(2);
if (!nodeDir || !json) {
  console.error('usage: node node_proxy.mjs NODE_DIR JSON');
  process.exit(2);
}
const c = JSON.parse(json);
const require = createRequire(`${nodeDir}/package.json`);
const {Connector} = require('@google-cloud/cloud-sql-connector');
const {OAuth2Client} = require('google-auth-library');

const auth = new OAuth2Client();
auth.setCredentials({access_token: c.token});
const connector = new Connector({auth, sqlAdminAPIEndpoint: c.api});
process.on('SIGTERM', () => {
  connector.close();
  process.exit(0);
});
try {
  await connector.startLocalProxy({
    instanceConnectionName: c.instance,
    ipType: 'PUBLIC',
    listenOptions: {path: c.path},
  });
  console.log('ready');
} catch (e) {
  console.error(`node_proxy: ${e?.message ?? e}`);
  process.exit(1);
}

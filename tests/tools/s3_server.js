#!/usr/bin/env node
// A real S3-compatible server for tests, on loopback: s3rver (pinned in tests/package.json)
// behind a proxy that verifies AWS SigV4 the way S3 does, because s3rver itself does not
// (its source says "Signature version 4 calculation is unimplemented"). A wrong key, a wrong
// signature, a badly canonicalised query or a body that does not match x-amz-content-sha256
// gets 403 SignatureDoesNotMatch / 400 XAmzContentSHA256Mismatch, as from S3.
//
//   node s3_server.js --directory DIR --bucket NAME [--port 0] [--access-key K] [--secret-key S]
// Prints "s3 listening on 127.0.0.1:PORT" once ready. Data lives in DIR, so a restart on the same
// port and directory keeps the objects.
'use strict';
const crypto = require('crypto');
const http = require('http');
const path = require('path');

const modules = path.join(__dirname, '..', 'node_modules');
const S3rver = require(path.join(modules, 's3rver'));
const { DUMMY_ACCOUNT } = require(path.join(modules, 's3rver', 'lib', 'models', 'account'));

function flag(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const port = Number(flag('port', '0'));
const directory = flag('directory');
const bucket = flag('bucket', 'artifacts');
const accessKey = flag('access-key', 'testkey');
const secretKey = flag('secret-key', 'testsecret');
if (!directory) throw new Error('--directory is required');

// RFC 3986, as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ is %XX.
function encode(text) {
  return encodeURIComponent(text).replace(/[!'()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}
const hmac = (key, text) => crypto.createHmac('sha256', key).update(text).digest();
const sha256 = data => crypto.createHash('sha256').update(data).digest('hex');

function canonicalRequest(req, signedHeaders, payloadHash) {
  const [rawPath, rawQuery = ''] = req.url.split(/\?(.*)/s);
  const canonicalPath = rawPath.split('/').map(s => encode(decodeURIComponent(s))).join('/');
  const query = rawQuery === '' ? [] : rawQuery.split('&').map(p => {
    const [k, v = ''] = p.split(/=(.*)/s);
    return [encode(decodeURIComponent(k)), encode(decodeURIComponent(v.replace(/\+/g, '%20')))];
  });
  query.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const headers = signedHeaders.map(h => `${h}:${String(req.headers[h] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
  return [req.method, canonicalPath, query.map(([k, v]) => `${k}=${v}`).join('&'), headers,
          signedHeaders.join(';'), payloadHash].join('\n');
}

function s3Error(res, status, code, message) {
  res.writeHead(status, { 'Content-Type': 'application/xml' });
  res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message></Error>`);
}

// Returns an error [status, code, message] or null when the request is properly signed.
function verify(req, body) {
  const auth = req.headers.authorization || '';
  const m = auth.match(/^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/);
  if (!m) return [403, 'AccessDenied', 'missing or malformed SigV4 Authorization header'];
  const [, key, date, region, signed, signature] = m;
  if (key !== accessKey) return [403, 'InvalidAccessKeyId', 'unknown access key'];
  const payloadHash = req.headers['x-amz-content-sha256'];
  if (!payloadHash) return [400, 'InvalidRequest', 'missing x-amz-content-sha256'];
  if (payloadHash !== 'UNSIGNED-PAYLOAD' && payloadHash !== sha256(body)) {
    return [400, 'XAmzContentSHA256Mismatch', 'the body does not match x-amz-content-sha256'];
  }
  const signedHeaders = signed.split(';');
  if (!signedHeaders.includes('host') || !signedHeaders.includes('x-amz-date')) {
    return [403, 'AccessDenied', 'host and x-amz-date must be signed'];
  }
  const amzDate = req.headers['x-amz-date'] || '';
  const scope = `${date}/${region}/s3/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonicalRequest(req, signedHeaders, payloadHash))].join('\n');
  const signingKey = hmac(hmac(hmac(hmac(`AWS4${secretKey}`, date), region), 's3'), 'aws4_request');
  if (hmac(signingKey, toSign).toString('hex') !== signature) {
    return [403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided.'];
  }
  return null;
}

async function main() {
  DUMMY_ACCOUNT.createKeyPair(accessKey, secretKey);
  const backend = new S3rver({ address: '127.0.0.1', port: 0, directory, silent: true,
                               configureBuckets: [{ name: bucket }] });
  const inner = await backend.run();
  const proxy = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', c => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const error = verify(req, body);
      if (error) return s3Error(res, ...error);
      const upstream = http.request({ host: '127.0.0.1', port: inner.port, method: req.method, path: req.url,
                                      headers: req.headers }, up => {
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
      });
      upstream.on('error', e => s3Error(res, 500, 'InternalError', e.message));
      upstream.end(body);
    });
  });
  proxy.keepAliveTimeout = 30000;
  proxy.listen(port, '127.0.0.1', () => {
    console.log(`s3 listening on 127.0.0.1:${proxy.address().port}`);
  });
}

main().catch(e => {
  console.error(e);
  process.exit(1);
});

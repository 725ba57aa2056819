// Reference GPT-2 tokenizer: prints the js-tiktoken ids of documents in the
// format of overlord_tokenize, one line of space-separated ids per document.
//
//   node tools/reference/tokenize.mjs [--reference-dir DIR] [--jsonl-field NAME] [FILE...]
//
// Each FILE is read as bytes and decoded with TextDecoder's default options,
// which turn invalid UTF-8 into U+FFFD and drop a leading byte order mark.
// With --jsonl-field, each non-blank line of a FILE is a JSON object whose
// string field NAME is one document. Without a FILE it reads standard input.
//
// js-tiktoken is loaded from DIR/node_modules, where DIR is --reference-dir,
// else $OVERLORD_REFERENCE_DIR, else $OVERLORD_DATA_DIR/reference, else
// data/demo/reference in this repository (scripts/fetch-demo-data installs
// it there).
// To install it into DIR:
//   npm install --prefix DIR --no-save --no-package-lock js-tiktoken

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const repositoryRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const usageText = `usage: node tools/reference/tokenize.mjs [--reference-dir DIR] [--jsonl-field NAME] [FILE...]

Prints the js-tiktoken "gpt2" ids of each document as one line of
space-separated ids. Reads standard input when no FILE is given.

  --reference-dir DIR   directory whose node_modules contains js-tiktoken
                        (default: $OVERLORD_REFERENCE_DIR, else
                        $OVERLORD_DATA_DIR/reference, else
                        data/demo/reference in this repository)
  --jsonl-field NAME    treat each FILE as JSON Lines and tokenize the string
                        field NAME of every record; blank lines are skipped
  --help                print this help
`;

// Loads js-tiktoken's "gpt2" encoding from DIR/node_modules.
export function loadReferenceEncoding(referenceDirectory) {
  const dataDirectory = process.env.OVERLORD_DATA_DIR ?? path.join(repositoryRoot, 'data', 'demo');
  const directory = path.resolve(
    referenceDirectory ?? process.env.OVERLORD_REFERENCE_DIR ?? path.join(dataDirectory, 'reference')
  );
  const require = createRequire(path.join(directory, 'package.json'));
  let tiktoken;
  try {
    tiktoken = require('js-tiktoken');
  } catch (failure) {
    throw new Error(
      `js-tiktoken not found under ${path.join(directory, 'node_modules')} (${failure.code ?? failure.message}); ` +
        `install it with "npm install --prefix ${directory} --no-save --no-package-lock js-tiktoken", ` +
        'or point --reference-dir or OVERLORD_REFERENCE_DIR at a directory that has it'
    );
  }
  return tiktoken.getEncoding('gpt2');
}

// Returns the ids of one document given as a JavaScript string. The empty
// allowedSpecial and disallowedSpecial lists make js-tiktoken encode
// "<|endoftext|>" as ordinary text; with its defaults it throws instead.
export function encodeText(encoding, text) {
  return encoding.encode(text, [], []);
}

// Returns the documents of a file's bytes: the whole decoded text, or the
// string field `jsonlField` of every non-blank line.
export function readDocuments(bytes, name, jsonlField) {
  const text = new TextDecoder('utf-8').decode(bytes);
  if (jsonlField == null) return [text];

  const documents = [];
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index];
    // overlord_tokenize skips the same lines: only spaces, tabs and CRs.
    if (/^[ \t\r]*$/.test(line)) continue;
    const where = `line ${index + 1} of '${name}'`;
    let record;
    try {
      record = JSON.parse(line);
    } catch (failure) {
      throw new Error(`${where} is not valid JSON: ${failure.message}`);
    }
    if (record === null || typeof record !== 'object' || Array.isArray(record)) {
      throw new Error(`${where} is not a JSON object`);
    }
    if (typeof record[jsonlField] !== 'string') {
      throw new Error(`${where} has no string field "${jsonlField}"; check --jsonl-field`);
    }
    documents.push(record[jsonlField]);
  }
  return documents;
}

function parseArguments(argv) {
  const parsed = { referenceDirectory: undefined, jsonlField: undefined, files: [] };
  for (let i = 0; i < argv.length; i++) {
    const argument = argv[i];
    if (argument === '--help' || argument === '-h') {
      process.stdout.write(usageText);
      process.exit(0);
    } else if (argument === '--reference-dir' || argument === '--jsonl-field') {
      if (i + 1 >= argv.length) throw new UsageError(`${argument} needs a value`);
      const value = argv[++i];
      if (argument === '--reference-dir') parsed.referenceDirectory = value;
      else parsed.jsonlField = value;
    } else if (argument.length > 1 && argument.startsWith('-')) {
      throw new UsageError(`unknown option '${argument}'`);
    } else {
      parsed.files.push(argument);
    }
  }
  return parsed;
}

class UsageError extends Error {}

function readInput(file) {
  if (file === '-') return fs.readFileSync(0);
  try {
    return fs.readFileSync(file);
  } catch (failure) {
    throw new Error(`cannot open input file '${file}': ${failure.message}`);
  }
}

function main() {
  let parsed;
  try {
    parsed = parseArguments(process.argv.slice(2));
  } catch (failure) {
    if (!(failure instanceof UsageError)) throw failure;
    process.stderr.write(`tokenize.mjs: ${failure.message}\n\n${usageText}`);
    process.exit(2);
  }

  try {
    const encoding = loadReferenceEncoding(parsed.referenceDirectory);
    const files = parsed.files.length > 0 ? parsed.files : ['-'];
    for (const file of files) {
      const name = file === '-' ? 'standard input' : file;
      for (const document of readDocuments(readInput(file), name, parsed.jsonlField)) {
        process.stdout.write(encodeText(encoding, document).join(' ') + '\n');
      }
    }
  } catch (failure) {
    process.stderr.write(`tokenize.mjs: error: ${failure.message}\n`);
    process.exit(1);
  }
}

// Run main() only when this file is the program, not when it is imported.
// Node.js resolves symlinks in import.meta.url (Bazel's runfiles are
// symlinks), so compare real paths.
function isMainModule() {
  if (!process.argv[1]) return false;
  try {
    return fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMainModule()) {
  main();
}

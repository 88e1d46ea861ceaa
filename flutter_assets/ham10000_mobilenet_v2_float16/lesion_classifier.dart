// Runs the ham10000_mobilenet_v2_float16 skin-lesion classifier bundle with tflite_flutter.
// Not a medical device: research and demonstration use only.
//
// The steps are those of the toolkit's contract test, one for one:
//   1. read manifest.json and labels.txt;
//   2. decode upright as 8-bit RGB and resize as the manifest says (squash or pad) with the contract's resize:
//      resize.js of the toolkit, line for line, so the bytes match the toolkit's (check with flutter test);
//   3. feed bytes of the input dtype (uint8: raw bytes; int8: bytes - 128; float32: values 0-255);
//   4. dequantise the output with the manifest's scale and zero point;
//   5. referral: sum the operating point's classes and compare with its threshold (manifest.json `referral`).
//
// Put this file in your app's lib/ and the bundle's files in assets/ham10000_mobilenet_v2_float16/.
// pubspec.yaml: tflite_flutter ^0.12.0 (0.12.x: 16 KB page alignment, as Google Play requires), image ^4.2.0,
// and the bundle folder under flutter: assets:. Load once (LesionClassifier.load), close when done (close()).

import 'dart:convert';
import 'dart:isolate';
import 'dart:math' as math;
import 'dart:typed_data';

import 'package:flutter/services.dart' show rootBundle;
import 'package:image/image.dart' as img;
import 'package:tflite_flutter/tflite_flutter.dart';

class LesionPrediction {
  const LesionPrediction(this.label, this.displayName, this.probability);

  final String label;
  final String displayName;
  final double probability;

  @override
  String toString() => '$label (${(probability * 100).toStringAsFixed(1)}%)';
}

/// Whether to tell the user to see a dermatologist, at one of the manifest's operating points.
class ReferralDecision {
  const ReferralDecision(this.point, this.score, this.threshold, this.sensitivity, this.specificity);

  final String point;
  final double score; // the summed probability of the point's classes
  final double threshold;
  final double sensitivity; // on the held-out test split, as measured at export
  final double specificity;

  bool get refer => score >= threshold;

  @override
  String toString() => '${refer ? 'refer' : 'no referral'} at $point (score ${score.toStringAsFixed(3)}, '
      'threshold ${threshold.toStringAsFixed(3)}): not a medical device';
}

class LesionClassifier {
  LesionClassifier._(this._interpreter, this._isolate, this._manifest, this.labels, this.displayNames);

  final Interpreter _interpreter;
  final IsolateInterpreter _isolate; // runs the model off the UI isolate
  final Map<String, dynamic> _manifest;
  final List<String> labels;
  final List<String> displayNames;

  /// Loads the bundle from `folder` (the asset path of the copied bundle folder).
  static Future<LesionClassifier> load({String folder = 'assets/ham10000_mobilenet_v2_float16', int threads = 2}) async {
    final manifest = jsonDecode(await rootBundle.loadString('$folder/manifest.json')) as Map<String, dynamic>;
    final labels = const LineSplitter()
        .convert(await rootBundle.loadString('$folder/labels.txt'))
        .where((line) => line.isNotEmpty)
        .toList();
    final classes = (manifest['classes'] as List).cast<Map<String, dynamic>>();
    final interpreter = await Interpreter.fromAsset('$folder/model.tflite',
        options: InterpreterOptions()..threads = threads);
    final outputs = interpreter.getOutputTensor(0).shape.last;
    if (outputs != labels.length) {
      interpreter.close();
      throw StateError('labels.txt has ${labels.length} labels but the model has $outputs outputs');
    }
    final isolate = await IsolateInterpreter.create(address: interpreter.address);
    return LesionClassifier._(
        interpreter, isolate, manifest, labels, [for (final c in classes) c['display_name'] as String]);
  }

  int get inputSize => (_manifest['input']['shape'] as List)[1] as int;

  /// Step 2: the photo's RGB bytes at the model's input size, as the manifest's resize mode says.
  Uint8List resize(img.Image photo) => resizeFor(photo, _manifest);

  /// Step 3: the resized RGB bytes as the bytes of the model's input tensor.
  Uint8List inputBytes(Uint8List resized) => inputBytesFor(resized, _manifest);

  /// Steps 1-3 for encoded bytes, with no state: what [probabilitiesOfBytes] runs in a background isolate.
  static Uint8List prepare(Uint8List encoded, Map<String, dynamic> manifest) {
    final photo = img.decodeImage(encoded); // applies the EXIF orientation, as the manifest's `decode` says
    if (photo == null) throw ArgumentError('not an image the image package can decode');
    return inputBytesFor(resizeFor(photo, manifest), manifest);
  }

  /// The manifest's decode rule: 8-bit RGB as browsers decode, gray repeated, 16-bit to its high byte,
  /// palettes expanded, an opaque alpha dropped; transparency refused.
  static Uint8List rgbBytes(img.Image photo) {
    final shift = photo.bitsPerChannel == 16 && !photo.hasPalette ? 8 : 0;
    final gray = photo.numChannels < 3 && !photo.hasPalette;
    final rgb = Uint8List(photo.width * photo.height * 3);
    var i = 0;
    for (final p in photo) {
      if (photo.hasAlpha && p.a < p.maxChannelValue) {
        throw ArgumentError('an image with transparency: the manifest takes opaque photos only');
      }
      final r = p.r.toInt() >> shift;
      rgb[i++] = r;
      rgb[i++] = gray ? r : p.g.toInt() >> shift;
      rgb[i++] = gray ? r : p.b.toInt() >> shift;
    }
    return rgb;
  }

  static Uint8List resizeFor(img.Image photo, Map<String, dynamic> manifest) {
    final size = (manifest['input']['shape'] as List)[1] as int;
    final mode = manifest['preprocessing']['resize_mode'] as String;
    return resizeContract(rgbBytes(photo), photo.width, photo.height, 3, size, mode);
  }

  // The contract's resize, resize.js line for line: per axis, area averaging with fractional edge weights when
  // it shrinks, linear with half-pixel centres and clamped edges when it grows; taps summed in doubles in
  // source order, columns first, then rows, rounded half up once.
  static List<List<List<num>>> taps(int source, int target) {
    final scale = source / target;
    final rows = <List<List<num>>>[];
    for (var j = 0; j < target; j++) {
      final row = <List<num>>[];
      if (target < source) {
        final start = j * scale, end = (j + 1) * scale;
        final first = start.floor(), stop = math.min(end.ceil(), source);
        for (var i = first; i < stop; i++) {
          row.add([i, (math.min(i + 1, end) - math.max(i, start)) / scale]);
        }
      } else {
        final centre = math.min(math.max((j + 0.5) * scale - 0.5, 0.0), source - 1.0);
        final left = centre.floor();
        final fraction = centre - left;
        row..add([left, 1.0 - fraction])..add([math.min(left + 1, source - 1), fraction]);
      }
      rows.add(row);
    }
    return rows;
  }

  static Float64List _resample(Float64List values, int outer, int length, int inner, int target) {
    final rows = taps(length, target);
    final out = Float64List(outer * target * inner);
    for (var o = 0; o < outer; o++) {
      for (var j = 0; j < target; j++) {
        for (var k = 0; k < inner; k++) {
          var total = 0.0;
          for (final tap in rows[j]) {
            total += tap[1].toDouble() * values[(o * length + tap[0].toInt()) * inner + k];
          }
          out[(o * target + j) * inner + k] = total;
        }
      }
    }
    return out;
  }

  static Uint8List resizeExact(Uint8List rgb, int width, int height, int channels, int newWidth, int newHeight) {
    final values = Float64List.fromList([for (final v in rgb) v.toDouble()]);
    final columns = _resample(values, height, width, channels, newWidth);
    final rows = _resample(columns, 1, height, newWidth * channels, newHeight);
    return Uint8List.fromList([for (final v in rows) math.min(math.max((v + 0.5).floor(), 0), 255)]);
  }

  static List<int> paddedSize(int width, int height, int size) {
    final scale = size / math.max(width, height);
    return [(width * scale + 0.5).floor(), (height * scale + 0.5).floor()];
  }

  static Uint8List resizeContract(Uint8List rgb, int width, int height, int channels, int size, String mode) {
    if (mode == 'squash') return resizeExact(rgb, width, height, channels, size, size);
    final padded = paddedSize(width, height, size);
    final newWidth = padded[0], newHeight = padded[1];
    final resized = resizeExact(rgb, width, height, channels, newWidth, newHeight);
    final canvas = Uint8List(size * size * channels); // black
    final top = (size - newHeight) ~/ 2, left = (size - newWidth) ~/ 2;
    for (var y = 0; y < newHeight; y++) {
      canvas.setRange(((top + y) * size + left) * channels, ((top + y) * size + left + newWidth) * channels,
          resized, y * newWidth * channels);
    }
    return canvas;
  }

  static Uint8List inputBytesFor(Uint8List rgb, Map<String, dynamic> manifest) {
    final input = manifest['input'] as Map<String, dynamic>;
    final scale = (input['scale'] as num).toDouble();
    final zeroPoint = input['zero_point'] as int;
    switch (input['dtype'] as String) {
      case 'uint8':
      case 'int8':
        final signed = input['dtype'] == 'int8';
        final low = signed ? -128 : 0, high = signed ? 127 : 255;
        final quantized = Int32List(rgb.length);
        for (var i = 0; i < rgb.length; i++) {
          quantized[i] = ((rgb[i] / scale).round() + zeroPoint).clamp(low, high);
        }
        return signed
            ? Int8List.fromList(quantized).buffer.asUint8List()
            : Uint8List.fromList(quantized);
      case 'float32':
        return Float32List.fromList([for (final v in rgb) v.toDouble()]).buffer.asUint8List();
      default:
        throw UnsupportedError('input dtype ${input['dtype']}');
    }
  }

  /// Step 4: class probabilities, dequantised, in label order.
  List<double> probabilities(Uint8List raw) {
    final output = _manifest['output'] as Map<String, dynamic>;
    final scale = (output['scale'] as num).toDouble();
    final zeroPoint = output['zero_point'] as int;
    switch (output['dtype'] as String) {
      case 'uint8':
        return [for (final q in raw) scale * (q - zeroPoint)];
      case 'int8':
        return [for (final q in raw.buffer.asInt8List(raw.offsetInBytes, raw.length)) scale * (q - zeroPoint)];
      case 'float32':
        return raw.buffer.asFloat32List(raw.offsetInBytes, raw.length ~/ 4).toList();
      default:
        throw UnsupportedError('output dtype ${output['dtype']}');
    }
  }

  /// Steps 1-4 off the UI isolate: decode and resize in a background isolate, run in the interpreter's own.
  Future<List<double>> probabilitiesOfBytes(Uint8List encoded) async {
    final manifest = _manifest;
    final input = await Isolate.run(() => prepare(encoded, manifest));
    final output = Uint8List(_interpreter.getOutputTensor(0).numBytes());
    await _isolate.run(input, output.buffer);
    return probabilities(output);
  }

  /// Steps 2-4 on the calling isolate: for tests and background work, not for a UI callback.
  List<double> probabilitiesOf(img.Image photo) {
    _interpreter.getInputTensor(0).setTo(inputBytes(resize(photo)));
    _interpreter.invoke();
    return probabilities(Uint8List.fromList(_interpreter.getOutputTensor(0).data));
  }

  /// The names of the manifest's referral operating points, and the one used by default.
  List<String> get operatingPoints =>
      [for (final p in (_manifest['referral']['points'] as List)) (p as Map<String, dynamic>)['name'] as String];
  String get defaultOperatingPoint => _manifest['referral']['default'] as String;

  /// Step 5: the referral decision for `probs` at `point` (default: the manifest's default).
  ReferralDecision referral(List<double> probs, {String? point}) {
    final name = point ?? defaultOperatingPoint;
    final referral = _manifest['referral'] as Map<String, dynamic>;
    final spec = (referral['points'] as List).cast<Map<String, dynamic>>().firstWhere((p) => p['name'] == name,
        orElse: () => throw ArgumentError('unknown operating point $name; expected one of $operatingPoints'));
    // Classes by their short names (manifest `classes`), which stay put when labels.txt renames them.
    final shortNames = [for (final c in (_manifest['classes'] as List)) (c as Map<String, dynamic>)['short_name']];
    var score = 0.0;
    for (final short in (spec['classes'] as List).cast<String>()) {
      final index = shortNames.indexOf(short);
      if (index < 0) throw StateError('operating point $name needs class $short, which the manifest lacks');
      score += probs[index];
    }
    final tested = ((referral['test'] as List?) ?? const [])
        .cast<Map<String, dynamic>>()
        .where((p) => p['name'] == name)
        .map((p) => p['exported'] as Map<String, dynamic>)
        .firstOrNull;
    double measured(String key) => tested == null ? double.nan : (tested[key]['value'] as num).toDouble();
    return ReferralDecision(
        name, score, (spec['threshold'] as num).toDouble(), measured('sensitivity'), measured('specificity'));
  }

  /// All classes, most probable first.
  List<LesionPrediction> ranked(List<double> probs) =>
      [for (var i = 0; i < labels.length; i++) LesionPrediction(labels[i], displayNames[i], probs[i])]
        ..sort((a, b) => b.probability.compareTo(a.probability));

  List<LesionPrediction> classify(img.Image photo) => ranked(probabilitiesOf(photo));

  /// Decodes an encoded photo (JPEG, PNG, ...) and classifies it, off the UI isolate.
  Future<List<LesionPrediction>> classifyBytes(Uint8List encoded) async => ranked(await probabilitiesOfBytes(encoded));

  Future<void> close() async {
    await _isolate.close();
    _interpreter.close();
  }
}

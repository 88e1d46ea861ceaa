// flutter test: the Dart side of the preprocessing contract, checked against golden files the toolkit wrote.
// Not a medical device: research and demonstration use only.
//
// Set-up: lesion_classifier.dart in lib/, this file in test/, the bundle's golden/ folder in test/golden/, and
// `crypto: ^3.0.0` under dev_dependencies. The resize checks are pure Dart and run anywhere; the model checks
// need TensorFlow Lite's native library on the machine running the test, so they run only when the environment
// variable LESION_MODEL (the path of the bundle's model.tflite) is set.

import 'dart:convert';
import 'dart:io';

import 'package:crypto/crypto.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:image/image.dart' as img;
import 'package:tflite_flutter/tflite_flutter.dart';

import '../lib/lesion_classifier.dart';

void main() {
  final golden = jsonDecode(File('test/golden/golden.json').readAsStringSync()) as Map<String, dynamic>;
  final manifest = golden['manifest'] as Map<String, dynamic>;
  final cases = (golden['images'] as List).cast<Map<String, dynamic>>();
  final tolerance = (golden['tolerance'] as num).toDouble(); // int8: two quantization steps; float: 1e-3
  final modelPath = Platform.environment['LESION_MODEL'];

  for (final item in cases) {
    final file = item['file'] as String;
    img.Image photo() => img.decodeImage(File('test/golden/$file').readAsBytesSync())!;

    test('$file resizes to the toolkit\'s bytes (ham10000_mobilenet_v2_float16)', () {
      final resized = LesionClassifier.resizeFor(photo(), manifest);
      expect(sha256.convert(resized).toString(), item['resized_sha256']);
    });

    test('$file gets the toolkit\'s answer', () {
      final interpreter = Interpreter.fromFile(File(modelPath!));
      final full = jsonDecode(File('${File(modelPath).parent.path}/manifest.json').readAsStringSync())
          as Map<String, dynamic>;
      interpreter.getInputTensor(0).setTo(LesionClassifier.prepare(File('test/golden/$file').readAsBytesSync(), full));
      interpreter.invoke();
      final raw = interpreter.getOutputTensor(0).data;
      final output = full['output'] as Map<String, dynamic>;
      final scale = (output['scale'] as num).toDouble(), zeroPoint = output['zero_point'] as int;
      final probs = switch (output['dtype'] as String) {
        'uint8' => [for (final q in raw) scale * (q - zeroPoint)],
        'int8' => [for (final q in raw.buffer.asInt8List(raw.offsetInBytes, raw.length)) scale * (q - zeroPoint)],
        _ => raw.buffer.asFloat32List(raw.offsetInBytes, raw.length ~/ 4).toList(),
      };
      final expected = (item['probabilities'] as List).cast<num>();
      for (var i = 0; i < expected.length; i++) {
        expect(probs[i], closeTo(expected[i], tolerance));
      }
      interpreter.close();
    }, skip: modelPath == null ? 'set LESION_MODEL to the bundle\'s model.tflite to check the model too' : false);
  }
}

"""The footage pipeline (`facedeblur process`): see process.py for the order of the stages."""

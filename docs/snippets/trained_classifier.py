from saliency_detect.data import load_dataset
from saliency_detect.models import mnist_net_f, train_classifier

ds = load_dataset("mnist-sample", train_size=2000)  # MNIST shipped with the package: no download
f = mnist_net_f()  # MNIST-NET-f, the detection paper's classifier; outputs logits
train_classifier(f, ds, epochs=1, verbose=0, random_state=0)  # a quick f (the paper: 10 epochs)
